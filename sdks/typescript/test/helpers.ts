// Every test talks to a real `herald serve` (started by the test file, on a free port, with a
// temporary SQLite database) and, for webhooks, to real HTTP receivers on loopback.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server as HttpServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { Herald } from "@herald/client";

export const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const REPO = resolve(PACKAGE, "..", "..");

export const CONFIG = `
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "2s"
max_attempts = 3
retention = "1d"
retry_after = "1s"

[webhooks]
allow_private_destinations = true
schedule = ["0s", "1s", "1s"]
`;

export interface Server {
  url: string;
  adminKey: string;
  process: ChildProcess;
  admin(): Herald;
  stop(): Promise<void>;
}

export function heraldBinary(): string {
  const found = process.env.HERALD_BIN ?? join(REPO, "target", "debug", "herald");
  if (!existsSync(found)) throw new Error(`no herald binary at ${found}: build it (cargo build -p herald --bin herald) or set HERALD_BIN`);
  return found;
}

export async function startHerald(config: string = CONFIG): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "herald-ts-"));
  writeFileSync(join(dir, "herald.toml"), config);
  const adminKey = "admin-" + randomUUID();
  const child = spawn(
    heraldBinary(),
    ["serve", "--listen", "127.0.0.1:0", "--database", `sqlite://${join(dir, "herald.db")}`, "--config", join(dir, "herald.toml")],
    { env: { ...process.env, HERALD_ADMIN_KEY: adminKey, HERALD_LOG: "warn" }, stdio: ["ignore", "pipe", "inherit"] },
  );
  const lines = createInterface({ input: child.stdout! });
  const url = await new Promise<string>((ok, fail) => {
    child.once("exit", (code) => fail(new Error(`herald exited (${code}) before listening`)));
    lines.on("line", (line) => {
      if (line.startsWith("herald listening on ")) ok(line.split(" ").pop()!);
    });
  });
  return {
    url,
    adminKey,
    process: child,
    admin: () => new Herald(url, adminKey),
    stop: () =>
      new Promise((done) => {
        if (child.exitCode !== null) return done();
        child.once("exit", () => done());
        child.kill("SIGKILL");
      }),
  };
}

export interface TenantKit {
  id: string;
  client: Herald;
  /** A worker key scoped to this tenant: tests never claim each other's work. */
  worker: Herald;
  workerKey: string;
}

export async function newTenant(server: Server): Promise<TenantKit> {
  const admin = server.admin();
  const t = await admin.createTenant("t-" + randomUUID().slice(0, 8));
  const key = await admin.createTenantKey(t.id);
  const worker = await admin.createKey("worker", { tenants: [t.id] });
  return { id: t.id, client: new Herald(server.url, key.key), worker: new Herald(server.url, worker.key), workerKey: worker.key };
}

export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A real webhook receiver on loopback: records every request, answers 200. */
export class Receiver {
  readonly #queue: Received[] = [];
  readonly #waiters: ((r: Received) => void)[] = [];
  readonly #server: HttpServer;
  /** Requests for these event ids are answered 500 (recorded all the same). */
  readonly failEvents = new Set<string>();
  url = "";

  private constructor() {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const got = { path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) };
        const waiter = this.#waiters.shift();
        if (waiter) waiter(got);
        else this.#queue.push(got);
        res.writeHead(this.failEvents.has(String(req.headers["x-event-id"])) ? 500 : 200).end();
      });
    });
  }

  static async start(): Promise<Receiver> {
    const r = new Receiver();
    await new Promise<void>((ok) => r.#server.listen(0, "127.0.0.1", ok));
    const addr = r.#server.address();
    if (addr === null || typeof addr === "string") throw new Error("no address");
    r.url = `http://127.0.0.1:${addr.port}/hooks`;
    return r;
  }

  next(timeoutMs = 30_000): Promise<Received> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((ok, fail) => {
      const t = setTimeout(() => fail(new Error("no webhook request arrived")), timeoutMs);
      this.#waiters.push((r) => {
        clearTimeout(t);
        ok(r);
      });
    });
  }

  get pending(): number {
    return this.#queue.length;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((ok) => this.#server.close(() => ok()));
  }
}

export async function eventually<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const got = await probe();
    if (got) return got;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gave up waiting for ${what}`);
}
