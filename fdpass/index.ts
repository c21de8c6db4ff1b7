// fdpass: hand live sockets (fds + already-read bytes + meta) between fdproxy's processes over
// AF_UNIX socketpairs with SCM_RIGHTS. The only module that imports ffi-rs (in native.ts).
export { Channel, channelPair } from './channel';
export type { Handoff, ChannelFds, ChannelOptions, SendCallbacks } from './channel';
export { FdpassError, FDPASS_ERRORS } from './errors';
export { MAX_BYTES as HANDOFF_MAX_BYTES } from './wire';
export type { FdpassCode } from './errors';
export { closeFd, assertSupported, getCloexec, _setPlatformForTest, acceptFd, shutdownFd, SHUT_RD } from './native';
export { socketFromFd, releaseSocket, resumeSocket } from './socket';
export { nodeBinding, streamBase, type StreamBase } from './binding';
export { channelFromStdio, stdioWithChannel, closeChannelFds, CHANNEL_ENV } from './stdio';
