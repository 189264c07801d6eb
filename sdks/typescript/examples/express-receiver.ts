// An Express receiver for Herald webhooks: verify the raw body, dedupe by event id, apply.
//   npm install ./sdks/typescript express
//   HERALD_WEBHOOK_SECRET=hsec_… node examples/express-receiver.js
import express, { type Express } from "express";
import { MemoryDedupe, WebhookVerificationError, WebhookVerifier, type DedupeStore } from "@herald/client";

export function createApp(secrets: () => string[], dedupe: DedupeStore, apply: (event: { id: string; type: string; data: unknown }) => Promise<void> | void): Express {
  const app = express();
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
    if (!(await dedupe.firstTime(eventId))) return void res.status(204).end(); // a redelivery
    try {
      await apply(JSON.parse(raw.toString("utf8")));
    } catch (e) {
      await dedupe.forget(eventId); // let Herald's retry apply it
      throw e;
    }
    res.status(204).end();
  });
  return app;
}

if (process.env.HERALD_WEBHOOK_SECRET) {
  // During a rotation, set both: HERALD_WEBHOOK_SECRET="hsec_new hsec_old".
  const secrets = process.env.HERALD_WEBHOOK_SECRET.split(/\s+/).filter(Boolean);
  createApp(() => secrets, new MemoryDedupe(), (e) => console.log("applied", e.id, e.type)).listen(Number(process.env.PORT ?? 8000));
}
