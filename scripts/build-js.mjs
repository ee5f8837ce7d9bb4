// Bundles js/index.ts into dist/index.mjs (ESM) and dist/index.cjs (CJS) for Node 20+.
//
// The native addon is not bundled: both builds load ../binding.cjs (dist/ is one level below the
// package root) with a CommonJS `require`, so the ESM and CJS builds share one addon instance.
// The CJS build has Node's `require`; the ESM build gets one from createRequire(import.meta.url)
// in its banner, which esbuild's require shim then uses.

import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

const common = {
  absWorkingDir: root,
  entryPoints: ["js/index.ts"],
  bundle: true,
  platform: "node",
  target: "node20",
  external: ["../binding.cjs"],
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning",
};

await Promise.all([
  build({
    ...common,
    format: "esm",
    outfile: "dist/index.mjs",
    banner: {
      js: 'import { createRequire as __bursoraCreateRequire } from "node:module";\nconst require = __bursoraCreateRequire(import.meta.url);',
    },
  }),
  build({ ...common, format: "cjs", outfile: "dist/index.cjs" }),
]);
