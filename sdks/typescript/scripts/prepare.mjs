// `npm install ./sdks/typescript` (from a checkout) runs this: it builds dist/ with tsc. A folder
// installed that way is linked, and npm does not install its devDependencies, so TypeScript is
// installed here first (`npm ci`, from package-lock.json, into this folder's node_modules) when
// it is missing.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const run = (cmd, args) => execFileSync(cmd, args, { cwd: here, stdio: "inherit" });
const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
if (!existsSync(tsc)) {
  const npm = process.env.npm_execpath;
  const args = ["ci", "--ignore-scripts", "--no-audit", "--no-fund"];
  if (npm) run(process.execPath, [npm, ...args]);
  else run(process.platform === "win32" ? "npm.cmd" : "npm", args);
}
run(process.execPath, [tsc, "-p", "tsconfig.json"]);
