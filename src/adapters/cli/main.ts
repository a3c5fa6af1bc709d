#!/usr/bin/env node
import { runCli } from './cli.js';

runCli(process.argv.slice(2)).then(
  (code) => { if (code !== undefined) process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`switchyard: ${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
