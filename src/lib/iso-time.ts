/** The API's times: ISO 8601 in UTC with milliseconds, as Date#toISOString writes them. */

const pad2 = (n: number) => (n < 10 ? `0${n}` : `${n}`);
const pad3 = (n: number) => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : `${n}`);

/**
 * Date#toISOString's text, built from the date's fields for years 1000–9999 (every time a job has): a third of
 * toISOString's cost, and a page of the list formats 80 of them. Other years, and invalid dates, go to toISOString.
 */
export function isoString(d: Date): string {
  const year = d.getUTCFullYear();
  if (!(year >= 1000 && year <= 9999)) return d.toISOString();
  return `${year}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}T${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}.${pad3(d.getUTCMilliseconds())}Z`;
}

/** Whether `text` is a timestamptz as Postgres writes it in UTC, years 1000–9999 ('2026-11-29 16:31:02.123456+00'). */
const isUtcTimestamptz = (text: string) =>
  text.length >= 22 && text.length <= 29 && text.charCodeAt(4) === 45 && text.charCodeAt(10) === 32 && text.endsWith('+00');

/**
 * A timestamptz as Postgres writes it in UTC ('2026-11-29 16:31:02.123456+00', the fraction cut to what it holds) in
 * Date#toISOString's form, by slicing: the list reads four per row, and parsing each into a Date only to format it
 * again cost more than the rest of the row. Any other text (another time zone, a year past 9999) goes through Date.
 */
export function isoFromTimestamptz(text: string): string {
  if (isUtcTimestamptz(text)) {
    const fraction = text.charCodeAt(19) === 46 ? text.slice(20, -3) : '';
    return `${text.slice(0, 10)}T${text.slice(11, 19)}.${`${fraction}000`.slice(0, 3)}Z`;
  }
  return new Date(text).toISOString();
}

/**
 * The same time as ISO 8601 UTC text keeping every digit of the fraction Postgres wrote (up to microseconds), for keyset
 * cursors; any other text goes through Date (and keeps milliseconds).
 */
export function exactIsoFromTimestamptz(text: string): string {
  return isUtcTimestamptz(text) ? `${text.slice(0, 10)}T${text.slice(11, -3)}Z` : new Date(text).toISOString();
}

/** A valid Date in years 1–9999, which Postgres timestamptz reads back (year 0 and six-digit years it refuses). */
export function isStorableTime(date: Date): boolean {
  const year = date.getUTCFullYear();
  return !Number.isNaN(date.getTime()) && year >= 1 && year <= 9999;
}
