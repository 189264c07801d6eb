// The worker loop: progress, completion, a cancel seen on heartbeat, graceful stop, and a worker
// killed mid-operation (SIGKILL of its process) whose operation another worker takes over after the lease.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { once } from "node:events";
import { join } from "node:path";
import { JobFailed, Worker, type Job } from "@herald/client";
import { PACKAGE, newTenant, startHerald, type Server } from "./helpers.js";

let server: Server;
const workers: Worker[] = []; // stopped at the end even when a test failed midway
before(async () => {
  server = await startHerald();
});
after(async () => {
  for (const w of workers) w.stop();
  await server.stop();
});

function track(w: Worker): Worker {
  workers.push(w);
  return w;
}

function latch(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

test("the worker reports progress and completes", async () => {
  const tenant = await newTenant(server);
  const halfway = latch();
  const goOn = latch();
  const worker = track(new Worker(
    tenant.worker,
    async (job: Job) => {
      job.setProgress(50);
      job.setMetadata("stage", "encoding");
      halfway.open();
      await goOn.promise;
      job.setProgress(100); // flushed before :complete
      return { echo: job.input };
    },
    { types: ["transcode"], claimWaitMs: 1000, heartbeatEveryMs: 200 },
  ));
  const running = worker.run();
  const op = await tenant.client.trigger("/videos", { n: 1 });
  await halfway.promise;
  let seen = await tenant.client.getOperation(op.name);
  while (seen.metadata.progress_percent !== 50) seen = await tenant.client.waitLongPoll(op.name, 200);
  assert.equal(seen.metadata.stage, "encoding");
  assert.equal(seen.done, false);
  goOn.open();
  const done = await tenant.client.wait(op.name, { timeoutMs: 30_000 });
  assert.deepEqual(done.response, { echo: { n: 1 } });
  assert.equal(done.metadata.progress_percent, 100);
  worker.stop();
  await running;
});

test("a cancel is seen on heartbeat", async () => {
  const tenant = await newTenant(server);
  const started = latch();
  const worker = track(new Worker(
    tenant.worker,
    async (job: Job) => {
      started.open();
      await once(job.signal, "abort");
      throw new JobFailed("CANCELLED", "cancelled by the client");
    },
    { types: ["transcode"], claimWaitMs: 1000, heartbeatEveryMs: 200 },
  ));
  const running = worker.run();
  const op = await tenant.client.trigger("/videos", { n: 2 });
  await started.promise;
  assert.equal((await tenant.client.cancel(op.name)).done, false); // running: told on the next beat
  const done = await tenant.client.wait(op.name, { timeoutMs: 30_000 });
  assert.equal(done.error?.code, "CANCELLED");
  worker.stop();
  await running;
});

test("stop lets the job in hand finish", async () => {
  const tenant = await newTenant(server);
  const started = latch();
  const release = latch();
  const worker = track(new Worker(
    tenant.worker,
    async () => {
      started.open();
      await release.promise;
      return "finished after stop";
    },
    { types: ["transcode"], claimWaitMs: 5000, heartbeatEveryMs: 200 },
  ));
  let returned = false;
  const running = worker.run().then(() => (returned = true));
  const op = await tenant.client.trigger("/videos", { n: 3 });
  await started.promise;
  worker.stop();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(returned, false, "run resolved with a job in hand");
  release.open();
  await running;
  assert.equal((await tenant.client.getOperation(op.name)).response, "finished after stop");
});

test("a killed worker loses its operation to another after the lease", async () => {
  const tenant = await newTenant(server);
  const op = await tenant.client.trigger("/videos", { n: 4 });
  const child = spawn(process.execPath, [join(PACKAGE, "build-test", "test", "worker-process.js"), server.url, tenant.workerKey], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [line] = (await once(createInterface({ input: child.stdout! }), "line")) as [string];
    assert.deepEqual(line.split(" "), ["claimed", op.name.replace("operations/", ""), "1"]);
    // It heartbeats: its progress reaches the poller.
    let seen = await tenant.client.getOperation(op.name);
    while (seen.metadata.progress_percent !== 10) seen = await tenant.client.waitLongPoll(op.name, 200);
  } finally {
    child.kill("SIGKILL");
    if (child.exitCode === null && child.signalCode === null) await once(child, "exit");
  }
  const attempts: number[] = [];
  const worker = track(new Worker(
    tenant.worker,
    (job: Job) => {
      attempts.push(job.attempt);
      return { taken_over: true };
    },
    { types: ["transcode"], claimWaitMs: 5000, heartbeatEveryMs: 500 },
  ));
  const running = worker.run();
  const done = await tenant.client.wait(op.name, { timeoutMs: 60_000 });
  worker.stop();
  await running;
  assert.deepEqual(done.response, { taken_over: true });
  assert.deepEqual(attempts, [2]);
});
