// `prepare` (run by `npm install` and `npm ci`): builds dist/ with TypeScript.
// A production install (`npm ci --omit=dev`) has no TypeScript; it works when dist/ is
// already built (`npm run build` first), and otherwise says how to install instead.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  if (existsSync('dist/main.js')) {
    process.stderr.write('fairbot: no TypeScript (a production install): using the dist/ built before\n');
    process.exit(0);
  }
  process.stderr.write(
    'fairbot: dist/ is not built and TypeScript is not installed (npm ci --omit=dev).\n' +
      'fairbot: install with `npm ci && npm prune --omit=dev` instead, or run `npm run build` before `npm ci --omit=dev`.\n',
  );
  process.exit(1);
}
const build = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
process.exit(build.status ?? 1);
