/**
 * ui-assets are the files of the web page `GET /ui` serves (control/ui/: index.html, ui.css,
 * icon.svg, and app.js and model.js compiled from TypeScript by `npm run build` into
 * dist/control/ui/), read once into memory, and the headers every one of them is sent with: a
 * strict Content-Security-Policy (nothing but this origin, no inline script or style, no frames),
 * no sniffing, no referrer, no caching.
 *
 * The files are fixed and hold no state of the router: the page reads everything it shows from
 * the documented status API, with the caller's own credentials (see control/ui/README.md).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** UI_PATH is where the page is served; its files are under `${UI_PATH}/`. */
export const UI_PATH = '/ui';

/** UI_FILES maps each URL path of the page to its file and content type; nothing else is served. */
const UI_FILES: Readonly<Record<string, { file: string; contentType: string }>> = {
  [UI_PATH]: { file: 'index.html', contentType: 'text/html; charset=utf-8' },
  [`${UI_PATH}/app.js`]: { file: 'app.js', contentType: 'text/javascript; charset=utf-8' },
  [`${UI_PATH}/model.js`]: { file: 'model.js', contentType: 'text/javascript; charset=utf-8' },
  [`${UI_PATH}/ui.css`]: { file: 'ui.css', contentType: 'text/css; charset=utf-8' },
  [`${UI_PATH}/icon.svg`]: { file: 'icon.svg', contentType: 'image/svg+xml' },
};

/**
 * UI_CSP is the page's Content-Security-Policy: scripts, styles, images and requests from this
 * origin only (so the page can load nothing from the internet and talk to nothing but this API),
 * no inline script or style attribute, no plugins, forms, base URL or framing.
 */
export const UI_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** UI_HEADERS go with every file of the page. */
export const UI_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': UI_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

/** UiAsset is one file of the page, ready to send. */
export interface UiAsset {
  readonly body: string;
  readonly contentType: string;
}

/** UiAssets are the page's files by URL path, or why there are none (`missing`). */
export interface UiAssets {
  readonly files: ReadonlyMap<string, UiAsset>;
  readonly missing: string | undefined;
}

/** isUiPath: `p` (without a trailing slash) is the page or one of its files. */
export function isUiPath(p: string): boolean {
  return p === UI_PATH || p.startsWith(`${UI_PATH}/`);
}

/** uiPaths lists the URL paths of the page's files (for the route table). */
export function uiPaths(): string[] {
  return Object.keys(UI_FILES);
}

/**
 * findUiDir returns the first directory holding every file of the page, from where this module
 * runs: dist/ (the one-file build dist/weft.mjs), dist/control/ (tsc's output), or control/ in
 * the source tree (then the compiled scripts are in ../dist/control/ui).
 */
export function findUiDir(here = path.dirname(fileURLToPath(import.meta.url))): string | undefined {
  const candidates = [
    path.join(here, 'ui'),
    path.join(here, 'control', 'ui'),
    path.join(here, '..', 'dist', 'control', 'ui'),
  ];
  return candidates.find((d) => Object.values(UI_FILES).every((f) => existsSync(path.join(d, f.file))));
}

/** loadUiAssets reads the page's files from `dir` (see {@link findUiDir}; undefined: none found) once. Never throws. */
export function loadUiAssets(dir: string | undefined): UiAssets {
  const files = new Map<string, UiAsset>();
  if (dir === undefined) return { files, missing: 'the web page is not built here (run `npm run build`)' };
  try {
    for (const [p, f] of Object.entries(UI_FILES)) {
      files.set(p, { body: readFileSync(path.join(dir, f.file), 'utf8'), contentType: f.contentType });
    }
  } catch (err) {
    files.clear();
    return { files, missing: `the web page cannot be read from ${dir}: ${(err as Error).message}` };
  }
  return { files, missing: undefined };
}
