// How a child gets its first channel: the parent puts one side's two fds in spawn's stdio array
// (they appear in the child at fds N and N+1 with close-on-exec cleared) and tells the child
// where through FDPROXY_CHANNEL_FDS="N,N+1". Later channels travel through this one.
import type { StdioOptions } from 'node:child_process';
import { Channel, type ChannelFds, type ChannelOptions } from './channel';
import { closeFd, setCloexec } from './native';

export const CHANNEL_ENV = 'FDPROXY_CHANNEL_FDS';

/** stdio array + env entry for spawn(); after spawning, the parent closes `side` (closeChannelFds). */
export function stdioWithChannel(side: ChannelFds, base: ('ignore' | 'inherit' | 'pipe')[] = ['ignore', 'inherit', 'inherit']):
  { stdio: StdioOptions; env: Record<string, string> } {
  const n = base.length;
  return { stdio: [...base, side.data, side.bell], env: { [CHANNEL_ENV]: `${n},${n + 1}` } };
}

export function closeChannelFds(side: ChannelFds): void {
  closeFd(side.data);
  closeFd(side.bell);
}

/** In the child: wrap the inherited channel fds (default: from FDPROXY_CHANNEL_FDS). Sets
 *  close-on-exec again so the child's own children do not inherit them. */
export function channelFromStdio(dataFd?: number, bellFd?: number, opts?: ChannelOptions): Channel {
  if (dataFd === undefined || bellFd === undefined) {
    const v = process.env[CHANNEL_ENV];
    const m = v && /^(\d+),(\d+)$/.exec(v);
    if (!m) throw new Error(`${CHANNEL_ENV} is not set to "data,bell" (got ${JSON.stringify(v)})`);
    dataFd = Number(m[1]); bellFd = Number(m[2]);
  }
  setCloexec(dataFd);
  setCloexec(bellFd);
  return new Channel({ data: dataFd, bell: bellFd }, opts);
}
