export * from './bytes.js';
export * from './errors.js';
export * from './lifecycle.js';
export * from './log.js';
export * from './types.js';
