// Router: the first route whose conditions all hold wins; its key template gives the sticky key.
// Runs per request on the acceptor's single core: everything is compiled at construction.
import type { Config, Route } from '../conf/types';
import { compileRoute, compileTemplate, type Caps, type Compiled, type Resolver } from './compile';
import { RequestView, type Head } from './request';

export interface Decision {
  route: Route;
  key: string | null;      // null → keyless (least-loaded worker and server)
  tenant: string | null;
}

export class Router {
  private readonly routes: Compiled[];
  private readonly view = new RequestView();
  private readonly caps: Caps;
  private readonly globalTenant: () => string | null;
  private readonly tenantOf: (() => string | null)[];

  constructor(readonly config: Config) {
    this.routes = config.routes.map(compileRoute);
    this.caps = new Array(Math.max(0, ...this.routes.map((r) => r.ncaps))).fill(undefined);
    const none: Caps = [];
    const resolve: Resolver | null = config.tenant === null ? null
      : compileTemplate(config.tenant, () => { throw new Error('captures are not allowed in tenant'); });
    const view = this.view;
    const fromSources = (v: RequestView) => resolve!(v, none, () => null);
    this.globalTenant = resolve === null ? () => null : () => view.tenant(fromSources);
    // A route that captures {tenant} (e.g. host "{tenant}.example.com") names its own tenant.
    const caps = this.caps;
    this.tenantOf = this.routes.map((r) => {
      const c = r.tenantCap;
      return c < 0 ? this.globalTenant : () => caps[c] ?? null;
    });
  }

  /** The decision for a request head, or null when no route matches (→ 404). */
  route(head: Head): Decision | null {
    const v = this.view, caps = this.caps;
    v.reset(head);
    const routes = this.routes;
    next: for (let i = 0; i < routes.length; i++) {
      const r = routes[i];
      const tenant = this.tenantOf[i];
      for (let j = 0; j < r.ncaps; j++) caps[j] = undefined;
      const conds = r.conds;
      for (let j = 0; j < conds.length; j++) if (!conds[j](v, caps, tenant)) continue next;
      const key = r.key === null ? null : r.key(v, caps, tenant);
      return { route: r.route, key, tenant: tenant() };
    }
    return null;
  }
}
