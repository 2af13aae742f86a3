/**
 * Origin policy shared by CORS and the WebSocket upgrade.
 * `allowed` null: same origin only (the page's Origin host equals the Host it called);
 * ["*"]: any origin; otherwise exactly the listed origins.
 */
export function isOriginAllowed(origin: string, request: Request, allowed: string[] | null): boolean {
  if (allowed === null) {
    try {
      return new URL(origin).host === request.headers.get("host");
    } catch {
      return false;
    }
  }
  return allowed.includes("*") || allowed.includes(origin);
}
