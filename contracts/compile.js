// Compiles every contract under src/ with the pinned solc-js through standard
// JSON (the solcjs CLI has no --evm-version): EVM "london" (the Clique chain
// has no Shanghai, so no PUSH0), optimizer on, no metadata hash so the
// bytecode is reproducible and comparable by auditors. Writes build/combined.json
// in solc's combined-json shape (abigen reads it). Fails on any error.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

// Usage: node compile.js [--src DIR]... [--out FILE]
// Sources are keyed "src/<path below DIR>", so several directories (the
// hand-written sources and freshly generated ones) compile to the same output
// as one; a later --src overrides a file of the same name.
const args = process.argv.slice(2);
const srcDirs = [];
let outFile = path.join(__dirname, 'build', 'combined.json');
for (let i = 0; i < args.length; i += 2) {
  if (args[i] === '--src') srcDirs.push(args[i + 1]);
  else if (args[i] === '--out') outFile = args[i + 1];
  else { process.stderr.write(`unknown argument ${args[i]}\n`); process.exit(2); }
}
if (srcDirs.length === 0) srcDirs.push(path.join(__dirname, 'src'));

function listSol(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return listSol(p);
    return e.name.endsWith('.sol') ? [p] : [];
  }).sort();
}

const found = {};
for (const dir of srcDirs) {
  for (const file of listSol(dir)) {
    found['src/' + path.relative(dir, file).split(path.sep).join('/')] = file;
  }
}
const sources = {};
for (const key of Object.keys(found).sort()) {
  sources[key] = { content: fs.readFileSync(found[key], 'utf8') };
}

const input = {
  language: 'Solidity',
  sources,
  settings: {
    evmVersion: 'london',
    optimizer: { enabled: true, runs: 200 },
    metadata: { bytecodeHash: 'none', appendCBOR: false },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
let failed = false;
for (const e of output.errors || []) {
  // Warnings are shown; errors fail the build.
  process.stderr.write(e.formattedMessage + '\n');
  if (e.severity === 'error') failed = true;
}
if (failed) process.exit(1);

const contracts = {};
for (const file of Object.keys(output.contracts).sort()) {
  for (const name of Object.keys(output.contracts[file]).sort()) {
    const c = output.contracts[file][name];
    if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
    contracts[`${file}:${name}`] = {
      abi: c.abi,
      bin: c.evm.bytecode.object,
      'bin-runtime': c.evm.deployedBytecode.object,
    };
  }
}
fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, JSON.stringify({ contracts, version: solc.version() }, null, 1) + '\n');
