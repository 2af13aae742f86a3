/**
 * Nesting depth of JSON text, measured before it is parsed: JSON.parse builds a 100,000-level
 * body without complaint (and holds all of it in memory), then JSON.stringify or any recursive
 * walk over it overflows the stack. Scanning first keeps such input from ever becoming a value.
 */

const OPEN_BRACE = 0x7b; // {
const OPEN_BRACKET = 0x5b; // [
const CLOSE_BRACE = 0x7d; // }
const CLOSE_BRACKET = 0x5d; // ]
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \

/**
 * True when arrays and objects in `text` nest deeper than `maxDepth` (`{}` is depth 1, `[[1]]`
 * depth 2). Brackets inside strings do not count; an escaped quote does not end a string. The
 * text need not be valid JSON: this only bounds what JSON.parse is later given.
 *
 * @example
 * exceedsJsonDepth('{"a":[1]}', 2); // false
 * exceedsJsonDepth('{"a":[[1]]}', 2); // true
 * exceedsJsonDepth('{"a":"[[[["}', 1); // false
 */
export function exceedsJsonDepth(text: string, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++; // the escaped character, whatever it is, cannot end the string
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > maxDepth) return true;
    } else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && depth > 0) {
      // Never below zero: stray closers in invalid JSON cannot buy room for deeper nesting later.
      depth--;
    }
  }
  return false;
}
