// Tokenise .crit files with the extension's TextMate grammar, as VS Code does (vscode-textmate
// with the Oniguruma regular expressions VS Code uses), and print the tokens as JSON:
// {"file": [[line, [[text, [scope, …]], …]], …]}. tests/test_textmate.py reads it.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const textmate = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const here = dirname(fileURLToPath(import.meta.url));
const grammarPath = join(here, "..", "syntaxes", "crit.tmLanguage.json");
const wasm = readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm")).buffer;
await oniguruma.loadWASM(wasm);

const registry = new textmate.Registry({
  onigLib: Promise.resolve({
    createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
    createOnigString: (text) => new oniguruma.OnigString(text),
  }),
  loadGrammar: async (scopeName) =>
    scopeName === "source.crit"
      ? textmate.parseRawGrammar(readFileSync(grammarPath, "utf-8"), grammarPath)
      : null,
});

const grammar = await registry.loadGrammar("source.crit");
const out = {};
for (const file of process.argv.slice(2)) {
  const lines = readFileSync(file, "utf-8").split(/\r\n|\r|\n/);
  let state = textmate.INITIAL;
  out[file] = lines.map((line) => {
    const result = grammar.tokenizeLine(line, state);
    state = result.ruleStack;
    return [line, result.tokens.map((t) => [line.slice(t.startIndex, t.endIndex), t.scopes])];
  });
}
process.stdout.write(JSON.stringify(out));
