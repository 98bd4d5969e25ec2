/**
 * TUN/TAP devices: the TunDevice contract, the kernel device (LinuxTun on the native addon), the
 * in-process fake (MemoryTun) and the addon loader. The conformance suite (device.suite.ts) is
 * test-only and deliberately not exported here.
 */
export type { TunDevice } from './device.js';
export { LinuxTun, type LinuxTunOptions, toTunOpenError } from './linux.js';
export { MemoryTun, type MemoryTunOptions } from './memory.js';
export {
  isNativeSystemError,
  loadNative,
  NATIVE_ADDON_RELPATH,
  type NativeAddon,
  type NativeSystemError,
  type NativeWatchHandle,
  nativeAddonCandidates,
  tryLoadNative,
} from './native.js';
