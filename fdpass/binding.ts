// Node's own stream bindings (tcp_wrap, pipe_wrap, stream_wrap), which net and Node's IPC use
// underneath net.Socket. Reached through process.binding, without its one-time deprecation
// warning (DEP0111, under --pending-deprecation). One lookup per name; null where this Node does
// not expose it, and the caller falls back to net.Socket.
const cache = new Map<string, any>();

export function nodeBinding(name: 'tcp_wrap' | 'pipe_wrap' | 'stream_wrap'): any | null {
  if (cache.has(name)) return cache.get(name);
  let b: any = null;
  try {
    const pb = (process as unknown as { binding(n: string): unknown }).binding;
    const noDep = process.noDeprecation;
    process.noDeprecation = true;
    try { b = pb.call(process, name) ?? null; } finally { process.noDeprecation = noDep; }
  } catch { b = null; }
  cache.set(name, b);
  return b;
}

/** stream_wrap's shared read/write state and request classes, as net's stream_base_commons uses
 *  them: after a handle's `onread(arrayBuffer)` the byte count (or a negative uv error) is in
 *  `state[kNread]` and the offset in `state[kOffset]`; after `writeBuffer(req, b)`,
 *  `state[kAsync]` is 1 when libuv queued part of it (then `req.oncomplete(status)` follows).
 *  null where this Node does not expose them. */
export interface StreamBase {
  state: Int32Array;
  kNread: number;
  kOffset: number;
  kAsync: number;
  WriteWrap: new () => any;
  ShutdownWrap: new () => any;
}
let sb: StreamBase | null | undefined;
export function streamBase(): StreamBase | null {
  if (sb !== undefined) return sb;
  const sw = nodeBinding('stream_wrap');
  sb = sw && sw.streamBaseState instanceof Int32Array && typeof sw.WriteWrap === 'function' && typeof sw.ShutdownWrap === 'function' &&
    [sw.kReadBytesOrError, sw.kArrayBufferOffset, sw.kLastWriteWasAsync].every((k: unknown) => typeof k === 'number')
    ? { state: sw.streamBaseState, kNread: sw.kReadBytesOrError, kOffset: sw.kArrayBufferOffset, kAsync: sw.kLastWriteWasAsync, WriteWrap: sw.WriteWrap, ShutdownWrap: sw.ShutdownWrap }
    : null;
  return sb;
}
