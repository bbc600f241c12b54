// JSON Schema validation (draft 2020-12 keywords, and draft-07's `definitions` and array
// `items`) without code generation, so it runs in any JavaScript engine.

import { escape } from "./json.js";

const TYPES = ["null", "boolean", "object", "array", "number", "string", "integer"];

function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function hasType(value, type) {
  const actual = typeOf(value);
  return actual === type || (type === "number" && actual === "integer");
}

function equal(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && equal(a[k], b[k]));
}

function regex(pattern) {
  try {
    return new RegExp(pattern, "u");
  } catch {
    return new RegExp(pattern);
  }
}

const FORMATS = {
  date: /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/,
  "date-time": /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/,
  email: /^[^\s@]+@[^\s@]+\.[^\s@]+$/,
  uri: /^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$/,
  ipv4: /^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$/,
  uuid: /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/,
};

function show(value) {
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** A compiled schema: `validate(value)` returns `[{ pointer, message }]`, empty when valid. */
export class Schema {
  constructor(root) {
    if (typeof root !== "object" && typeof root !== "boolean") {
      throw new TypeError("a schema is an object or a boolean");
    }
    this.root = root;
  }

  validate(value) {
    const errors = [];
    this.check(this.root, value, "", errors);
    return errors;
  }

  resolve(ref) {
    if (!ref.startsWith("#")) {
      throw new TypeError(`only references inside the schema are supported, not ${JSON.stringify(ref)}`);
    }
    let node = this.root;
    for (const part of ref.slice(1).split("/").slice(1)) {
      const key = decodeURIComponent(part).replaceAll("~1", "/").replaceAll("~0", "~");
      node = node?.[key];
    }
    if (node === undefined) throw new TypeError(`reference ${JSON.stringify(ref)} points nowhere`);
    return node;
  }

  /** True when `value` matches `schema`, without reporting. */
  matches(schema, value, pointer) {
    const scratch = [];
    this.check(schema, value, pointer, scratch);
    return scratch.length === 0;
  }

  check(schema, value, pointer, errors) {
    if (schema === true) return;
    if (schema === false) {
      errors.push({ pointer, message: "no value is allowed here" });
      return;
    }
    const error = (message) => errors.push({ pointer, message });
    const s = schema;

    if (s.$ref !== undefined) this.check(this.resolve(s.$ref), value, pointer, errors);

    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? s.type : [s.type];
      for (const t of types) {
        if (!TYPES.includes(t)) throw new TypeError(`unknown type ${JSON.stringify(t)} in the schema`);
      }
      if (!types.some((t) => hasType(value, t))) {
        error(`expected ${types.join(" or ")}, got ${typeOf(value)}`);
        return;
      }
    }
    if (s.enum !== undefined && !s.enum.some((e) => equal(e, value))) {
      error(`must be one of ${s.enum.map(show).join(", ")}`);
    }
    if (s.const !== undefined && !equal(s.const, value)) error(`must be ${show(s.const)}`);

    for (const sub of s.allOf ?? []) this.check(sub, value, pointer, errors);
    if (s.anyOf !== undefined && !s.anyOf.some((sub) => this.matches(sub, value, pointer))) {
      error("matches none of the allowed shapes (anyOf)");
    }
    if (s.oneOf !== undefined) {
      const count = s.oneOf.filter((sub) => this.matches(sub, value, pointer)).length;
      if (count !== 1) error(`must match exactly one shape (oneOf), matches ${count}`);
    }
    if (s.not !== undefined && this.matches(s.not, value, pointer)) error("matches a shape that is not allowed (not)");
    if (s.if !== undefined) {
      const branch = this.matches(s.if, value, pointer) ? s.then : s.else;
      if (branch !== undefined) this.check(branch, value, pointer, errors);
    }

    const kind = typeOf(value);
    if (kind === "string") this.checkString(s, value, error);
    if (kind === "number" || kind === "integer") this.checkNumber(s, value, error);
    if (kind === "array") this.checkArray(s, value, pointer, errors, error);
    if (kind === "object") this.checkObject(s, value, pointer, errors, error);
  }

  checkString(s, value, error) {
    const length = [...value].length;
    if (s.minLength !== undefined && length < s.minLength) error(`must be at least ${s.minLength} characters long`);
    if (s.maxLength !== undefined && length > s.maxLength) error(`must be at most ${s.maxLength} characters long`);
    if (s.pattern !== undefined && !regex(s.pattern).test(value)) error(`must match the pattern ${s.pattern}`);
    if (s.format !== undefined && FORMATS[s.format] && !FORMATS[s.format].test(value)) {
      error(`must be a valid ${s.format}`);
    }
  }

  checkNumber(s, value, error) {
    if (s.minimum !== undefined && value < s.minimum) error(`must be at least ${s.minimum}`);
    if (s.maximum !== undefined && value > s.maximum) error(`must be at most ${s.maximum}`);
    if (s.exclusiveMinimum !== undefined && value <= s.exclusiveMinimum) error(`must be greater than ${s.exclusiveMinimum}`);
    if (s.exclusiveMaximum !== undefined && value >= s.exclusiveMaximum) error(`must be less than ${s.exclusiveMaximum}`);
    if (s.multipleOf !== undefined && !Number.isInteger(value / s.multipleOf)) error(`must be a multiple of ${s.multipleOf}`);
  }

  checkArray(s, value, pointer, errors, error) {
    if (s.minItems !== undefined && value.length < s.minItems) error(`must have at least ${s.minItems} items`);
    if (s.maxItems !== undefined && value.length > s.maxItems) error(`must have at most ${s.maxItems} items`);
    if (s.uniqueItems) {
      value.forEach((item, i) => {
        if (value.slice(0, i).some((earlier) => equal(earlier, item))) {
          errors.push({ pointer: `${pointer}/${i}`, message: `repeats an earlier item (${show(item)})` });
        }
      });
    }
    // 2020-12: `prefixItems` then `items`; draft-07: `items` as an array, then `additionalItems`.
    const prefix = s.prefixItems ?? (Array.isArray(s.items) ? s.items : []);
    const rest = Array.isArray(s.items) ? s.additionalItems : s.items;
    value.forEach((item, i) => {
      const sub = i < prefix.length ? prefix[i] : rest;
      if (sub !== undefined) this.check(sub, item, `${pointer}/${i}`, errors);
    });
    if (s.contains !== undefined) {
      const count = value.filter((item, i) => this.matches(s.contains, item, `${pointer}/${i}`)).length;
      if (count < (s.minContains ?? 1)) error("contains no item of the required shape (contains)");
      if (s.maxContains !== undefined && count > s.maxContains) error(`contains more than ${s.maxContains} items of that shape`);
    }
  }

  checkObject(s, value, pointer, errors, error) {
    const keys = Object.keys(value);
    for (const name of s.required ?? []) {
      if (!Object.hasOwn(value, name)) error(`missing required property ${JSON.stringify(name)}`);
    }
    if (s.minProperties !== undefined && keys.length < s.minProperties) error(`must have at least ${s.minProperties} properties`);
    if (s.maxProperties !== undefined && keys.length > s.maxProperties) error(`must have at most ${s.maxProperties} properties`);
    for (const [name, needed] of Object.entries(s.dependentRequired ?? {})) {
      if (Object.hasOwn(value, name)) {
        for (const other of needed) {
          if (!Object.hasOwn(value, other)) error(`property ${JSON.stringify(name)} needs ${JSON.stringify(other)}`);
        }
      }
    }
    const patterns = Object.entries(s.patternProperties ?? {}).map(([p, sub]) => [regex(p), sub]);
    for (const key of keys) {
      const at = `${pointer}/${escape(key)}`;
      if (s.propertyNames !== undefined && !this.matches(s.propertyNames, key, at)) {
        errors.push({ pointer: at, message: `property name ${JSON.stringify(key)} is not allowed` });
      }
      let known = false;
      if (s.properties && Object.hasOwn(s.properties, key)) {
        known = true;
        this.check(s.properties[key], value[key], at, errors);
      }
      for (const [re, sub] of patterns) {
        if (re.test(key)) {
          known = true;
          this.check(sub, value[key], at, errors);
        }
      }
      if (!known && s.additionalProperties !== undefined) {
        if (s.additionalProperties === false) {
          errors.push({ pointer: at, message: `property ${JSON.stringify(key)} is not allowed` });
        } else {
          this.check(s.additionalProperties, value[key], at, errors);
        }
      }
    }
  }
}
