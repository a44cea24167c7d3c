// Records which sources the committed build was made from: a SHA-256 over the page sources, the build
// configuration and the lock file. tests/test_webui_build.py recomputes it and fails when the build is stale.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const FILES = ["index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json", "build-info.mjs"];

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

export function sourceDigest() {
  const paths = [...FILES.map((f) => join(here, f)), ...walk(join(here, "src"))]
    .map((p) => relative(here, p).split("\\").join("/"))
    .sort();
  const hash = createHash("sha256");
  for (const path of paths) {
    hash.update(path + "\0");
    hash.update(readFileSync(join(here, path)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

const out = join(here, "../inferchain/marketplace/webui/static/build-info.json");
writeFileSync(out, JSON.stringify({ source_sha256: sourceDigest() }, null, 2) + "\n");
console.log(`build-info.json: ${sourceDigest()}`);
