// The page's test: nats.js (v3, @nats-io/nats-core) `wsconnect` to
// natsgate's WebSocket listener with a user's creds (JWT + seed), then
// publish, subscribe, request, and a denied subscription whose
// `Permissions Violation` text is kept. Bundled into dist/bundle.js by
// esbuild; tests/browser.rs serves it and run.mjs calls `natsTest.run`.
import { credsAuthenticator, wsconnect } from "@nats-io/nats-core";

function within(ms, promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: timed out`)), ms)),
  ]);
}

export async function run(url, creds) {
  const out = { steps: [] };
  const nc = await within(
    5000,
    wsconnect({
      servers: url,
      authenticator: credsAuthenticator(new TextEncoder().encode(creds)),
      reconnect: false,
    }),
    "connect",
  );
  out.steps.push("connected");
  // Server status events (the permission error arrives as one too).
  const statuses = [];
  (async () => {
    for await (const s of nc.status()) {
      statuses.push(`${s.type}: ${s.error ? s.error.message : JSON.stringify(s.data ?? "")}`);
    }
  })();

  // Subscribe, then publish to it.
  const sub = nc.subscribe("browser.echo", { max: 1 });
  const echoed = (async () => {
    for await (const m of sub) return m.string();
  })();
  await nc.flush();
  nc.publish("browser.echo", "hello from the browser");
  nc.publish("browser.out", "to the tcp side");
  out.pubsub = await within(5000, echoed, "echo");

  // A request answered by a responder on the same connection.
  const svc = nc.subscribe("browser.svc");
  (async () => {
    for await (const m of svc) m.respond(`answer:${m.string()}`);
  })();
  await nc.flush();
  const reply = await within(5000, nc.request("browser.svc", "ping", { timeout: 4000 }), "request");
  out.request = reply.string();

  // A denied subscription: the -ERR text reaches the subscription.
  const denied = nc.subscribe("secret.plans");
  out.denied = await within(
    5000,
    (async () => {
      try {
        for await (const _ of denied) {
          return "delivered?";
        }
        return "closed without error";
      } catch (e) {
        return e.message;
      }
    })(),
    "denied subscription",
  ).catch((e) => e.message);
  await nc.flush();
  out.statuses = statuses;
  await nc.close();
  out.steps.push("closed");
  return out;
}
