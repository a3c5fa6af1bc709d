import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { PolicyError, parsePolicy, type Policy } from '../domain/policy.js';

/** Read a policy file (.json, .yaml or .yml). Errors name the file and each bad key. */
export function loadPolicyFile(path: string | undefined): Policy {
  if (!path) return parsePolicy({});
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read config ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = /\.ya?ml$/i.test(path) ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    throw new Error(`config ${path} is not valid ${/\.ya?ml$/i.test(path) ? 'YAML' : 'JSON'}: ${(e as Error).message}`);
  }
  try {
    return parsePolicy(doc);
  } catch (e) {
    if (e instanceof PolicyError) throw new Error(`config ${path}: ${e.issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    throw e;
  }
}
