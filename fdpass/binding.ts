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
