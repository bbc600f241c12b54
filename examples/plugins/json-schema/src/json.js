// A JSON parser that remembers where each value starts, so that a schema error can point
// at `file:line:col` instead of only at a JSON pointer.

export class JsonError extends Error {
  constructor(message, line, column) {
    super(`${line}:${column}: ${message}`);
    this.line = line;
    this.column = column;
  }
}

/** Parses `text`; returns `{ value, positions }` where positions maps JSON pointers to `{ line, column }`. */
export function parse(text) {
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const positions = new Map();

  const here = () => ({ line, column: i - lineStart + 1 });
  const fail = (message) => {
    const { line: l, column } = here();
    throw new JsonError(message, l, column);
  };
  const skip = () => {
    while (i < text.length) {
      const c = text[i];
      if (c === "\n") {
        line += 1;
        lineStart = i + 1;
      } else if (c !== " " && c !== "\t" && c !== "\r") {
        break;
      }
      i += 1;
    }
  };
  const expect = (word, value) => {
    if (text.startsWith(word, i)) {
      i += word.length;
      return value;
    }
    return fail(`unexpected ${JSON.stringify(text[i] ?? "end of file")}`);
  };
  const string = () => {
    const start = i;
    i += 1;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === "\\") i += 1;
      else if (text[i] === "\n") fail("line break inside a string");
      i += 1;
    }
    if (i >= text.length) fail("unterminated string");
    i += 1;
    try {
      return JSON.parse(text.slice(start, i));
    } catch {
      return fail("invalid escape in string");
    }
  };
  const number = () => {
    const match = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 64));
    if (!match) fail(`unexpected ${JSON.stringify(text[i])}`);
    i += match[0].length;
    return Number(match[0]);
  };
  const value = (pointer) => {
    skip();
    positions.set(pointer, here());
    const c = text[i];
    if (c === "{") {
      i += 1;
      const object = {};
      skip();
      if (text[i] === "}") {
        i += 1;
        return object;
      }
      for (;;) {
        skip();
        if (text[i] !== '"') fail("expected a property name in double quotes");
        const key = string();
        if (Object.hasOwn(object, key)) fail(`duplicate property ${JSON.stringify(key)}`);
        skip();
        if (text[i] !== ":") fail("expected `:` after the property name");
        i += 1;
        object[key] = value(`${pointer}/${escape(key)}`);
        skip();
        if (text[i] === ",") {
          i += 1;
          continue;
        }
        if (text[i] === "}") {
          i += 1;
          return object;
        }
        fail("expected `,` or `}`");
      }
    }
    if (c === "[") {
      i += 1;
      const array = [];
      skip();
      if (text[i] === "]") {
        i += 1;
        return array;
      }
      for (;;) {
        array.push(value(`${pointer}/${array.length}`));
        skip();
        if (text[i] === ",") {
          i += 1;
          continue;
        }
        if (text[i] === "]") {
          i += 1;
          return array;
        }
        fail("expected `,` or `]`");
      }
    }
    if (c === '"') return string();
    if (c === "t") return expect("true", true);
    if (c === "f") return expect("false", false);
    if (c === "n") return expect("null", null);
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    return fail(c === undefined ? "unexpected end of file" : `unexpected ${JSON.stringify(c)}`);
  };

  const result = value("");
  skip();
  if (i < text.length) fail("unexpected text after the JSON value");
  return { value: result, positions };
}

/** Escapes a property name for a JSON pointer (RFC 6901). */
export function escape(key) {
  return key.replaceAll("~", "~0").replaceAll("/", "~1");
}
