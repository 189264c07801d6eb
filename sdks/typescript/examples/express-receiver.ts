// An Express receiver for Herald webhooks: verify the raw body, dedupe by event id, apply.
// An event counts as seen only once it has been applied: a copy that arrives while the first is
// still being applied is answered 409 with Retry-After (Herald retries it later), and if applying
// fails the event is forgotten and answered 500, so Herald's retry applies it. The in-progress
// set is per process; with several replicas, keep that marker in your database too.
//   npm install ./sdks/typescript express
//   HERALD_WEBHOOK_SECRET=hsec_… node examples/express-receiver.js
import express, { type Express } from "express";
import { MemoryDedupe, WebhookVerificationError, WebhookVerifier, type DedupeStore } from "@herald/client";

export function createApp(secrets: () => string[], dedupe: DedupeStore, apply: (event: { id: string; type: string; data: unknown }) => Promise<void> | void): Express {
  const app = express();
  const inProgress = new Set<string>();
  // The raw bytes: verify before parsing.
  app.post("/hooks/herald", express.raw({ type: "*/*" }), async (req, res) => {
    const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    let eventId: string;
    try {
      eventId = new WebhookVerifier(secrets()).verify(req.headers, raw).eventId;
    } catch (e) {
      if (e instanceof WebhookVerificationError) return void res.status(400).send(e.message);
      throw e;
    }
    // Being applied right now: not done yet, so not a 2xx. Herald retries. (Checked and marked
    // before any await, so two copies cannot both pass.)
    if (inProgress.has(eventId)) return void res.status(409).set("retry-after", "1").send("event in progress");
    inProgress.add(eventId);
    try {
      if (!(await dedupe.firstTime(eventId))) return void res.status(204).end(); // a redelivery
      try {
        await apply(JSON.parse(raw.toString("utf8")));
      } catch (e) {
        await dedupe.forget(eventId); // not applied: let Herald's retry apply it
        throw e;
      }
      res.status(204).end();
    } finally {
      inProgress.delete(eventId);
    }
  });
  return app;
}

if (process.env.HERALD_WEBHOOK_SECRET) {
  // During a rotation, set both: HERALD_WEBHOOK_SECRET="hsec_new hsec_old".
  const secrets = process.env.HERALD_WEBHOOK_SECRET.split(/\s+/).filter(Boolean);
  createApp(() => secrets, new MemoryDedupe(), (e) => console.log("applied", e.id, e.type)).listen(Number(process.env.PORT ?? 8000));
}
