// Money arrives as integer nano-USD (1 USD = 10^9). Display turns it into a float at the very
// edge; CSV export keeps the exact decimal from the integer.

const NANOS = 1_000_000_000;
const CENT = 10_000_000;

const currency = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const compact = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  notation: "compact",
  maximumFractionDigits: 1,
});
const integer = new Intl.NumberFormat("en-US");
const percent = new Intl.NumberFormat("en-US", { style: "percent", maximumFractionDigits: 1 });

/** `$1,234.56`; below a cent, enough digits to show two significant ones (`$0.0042`). */
export function usd(nanos) {
  const n = Number(nanos ?? 0);
  if (n === 0) return "$0.00";
  const abs = Math.abs(n);
  if (abs >= CENT) return currency.format(n / NANOS);
  const digits = Math.min(9, 1 - Math.floor(Math.log10(abs / NANOS)));
  return `${n < 0 ? "-" : ""}\$${(abs / NANOS).toFixed(digits).replace(/0+$/, "")}`;
}

/** Short form for chart axes: `$1.2K`, `$3M`, `$0.05`. */
export function usdShort(nanos) {
  const n = Number(nanos ?? 0);
  if (Math.abs(n) >= 1000 * NANOS) return compact.format(n / NANOS);
  if (Math.abs(n) >= CENT || n === 0) return currency.format(n / NANOS);
  return usd(n);
}

/** The exact decimal USD of an integer nano-USD amount: `12.000000345`. */
export function usdExact(nanos) {
  let n = BigInt(Math.trunc(Number(nanos ?? 0)));
  const sign = n < 0n ? "-" : "";
  if (n < 0n) n = -n;
  const whole = n / 1_000_000_000n;
  const frac = (n % 1_000_000_000n).toString().padStart(9, "0");
  return `${sign}${whole}.${frac}`;
}

/** USD typed by a person → integer nano-USD, exactly (no float rounding); null if not a number. */
export function parseUsd(text) {
  const m = /^\s*\$?\s*(\d{1,7})(?:\.(\d{0,9}))?\s*$/.exec(String(text).replaceAll(",", ""));
  if (!m) return null;
  return Number(m[1]) * NANOS + Number((m[2] ?? "").padEnd(9, "0"));
}

export function count(n) {
  return integer.format(Number(n ?? 0));
}

export function share(part, whole) {
  return whole > 0 ? percent.format(part / whole) : "–";
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad = (n) => String(n).padStart(2, "0");

/** Every time is shown in UTC: budget windows and spend buckets are UTC-aligned. */
export function dateTime(ms) {
  const d = new Date(ms);
  return `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}, ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

export function day(ms) {
  const d = new Date(ms);
  return `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}`;
}

/** `14:05`, or `14:05:09` with seconds. */
export function hour(ms, seconds = false) {
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${seconds ? `:${pad(d.getUTCSeconds())}` : ""}`;
}

/** `2026-12-01` (UTC), for date inputs and file names. */
export function isoDate(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

export function iso(ms) {
  return new Date(ms).toISOString();
}

/** `3h 12m`, `4d 2h`, `45s`. */
export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs}h ${m % 60}m`;
  return `${Math.floor(hrs / 24)}d ${hrs % 24}h`;
}

/** `5s ago`, `3m ago`. */
export function ago(ms, now = Date.now()) {
  return `${duration(now - ms)} ago`;
}

export const DAY_MS = 86_400_000;
export const HOUR_MS = 3_600_000;

export function startOfUtcDay(ms) {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

export function startOfUtcMonth(ms) {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

export function startOfNextUtcMonth(ms) {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** `{tenant_id: "acme", env: "prod"}` → `tenant_id=acme, env=prod`. */
export function tagsText(tags) {
  return Object.entries(tags ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
}
