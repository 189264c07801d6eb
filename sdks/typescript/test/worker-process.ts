// A worker in its own process for worker.test.ts: claims, reports, heartbeats, never finishes.
import { Herald, Worker, type Job } from "@herald/client";

const [url, key] = process.argv.slice(2) as [string, string];
await new Worker(
  new Herald(url, key),
  async (job: Job) => {
    job.setProgress(10);
    process.stdout.write(`claimed ${job.id} ${job.attempt}\n`);
    await new Promise(() => setInterval(() => undefined, 1 << 30)); // until killed
  },
  { types: ["transcode"], claimWaitMs: 5000, heartbeatEveryMs: 200 },
).run();
