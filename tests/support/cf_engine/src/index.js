// One Worker, two jobs:
//
//  1. The test workflows run by Cloudflare's own local Workflows engine:
//     ConformanceWorkflow ("conformance-wf")
//       echo-params (step.do returning event.payload)
//       -> optional fatal step when params.fail === "fatal" (NonRetryableError)
//       -> nap (step.sleep, 1 second by default; params.sleep overrides it)
//       -> approval (step.waitForEvent, type "approval")
//       output: {params}
//     FatalWorkflow ("conformance-fatal-wf"): echo-params, then a step that always throws
//       NonRetryableError, so every instance ends `errored`.
//
//  2. A REST shim that serves the production paths of the Workflows instances API,
//       /client/v4/accounts/:account/workflows/:name/instances[...]
//     in the Cloudflare envelope, by calling the workflow bindings (env.WF, env.WF_FATAL). The
//     engine has no REST surface of its own apart from Miniflare's "explorer" (other paths and
//     fields); see shared/reference/local-workflows-engine.md, sections 3 and 5.
//
// Errors. The engine is reached through its binding, which throws; it defines no HTTP status and
// (apart from the per-id results of deleteBatch) no numeric code. The shim does not make any up:
// every error it passes on is HTTP 400 with errors[0].code 0 and errors[0].message
// `workflows.api.error.<slug>`, where the slug is the engine's own `(slug)` from its message
// (`instance.not_found`, `instance.already_exists`, `instance.invalid_id`, ...) or, for the engine's
// older unslugged texts, the shim's reading of them; `messages` carries the engine's text verbatim.
// Errors of the shim's own making (no such route here, a workflow this Worker does not deploy, an
// endpoint the local engine does not have) use the slugs `shim.*`. Every response carries the
// header `cf-engine-shim: 1`, so a client (the conformance tool) knows not to compare HTTP statuses
// or codes with production's.
//
// Routes: create, batch create, get (rich detail from Miniflare's explorer), status, events,
// DELETE of one instance and batch/delete (the binding's deleteInstance/deleteBatch), and
// GET …/step, read from the explorer's step log. Batch terminate and "terminate all" do not exist
// in the local engine: they answer `shim.not_available_locally`.

import { WorkflowEntrypoint } from "cloudflare:workers";
import { NonRetryableError } from "cloudflare:workflows";

// The steps both workflows share; `fatal` (or params.fail === "fatal") makes the second step throw
// a NonRetryableError, so the instance ends `errored` right after echoing its params.
async function conformanceRun(event, step, fatal) {
  const params = await step.do("echo-params", async () => event.payload ?? {});
  if (fatal || (params && params.fail === "fatal")) {
    await step.do("boom", async () => {
      throw new NonRetryableError("fatal boom");
    });
  }
  await step.sleep("nap", (params && params.sleep) || "1 second");
  await step.waitForEvent("approval", { type: "approval", timeout: "1 hour" });
  // The event payload is visible in the `approval` step of GET; the output echoes the params,
  // which is also what bridge/emulator outputs by default.
  return { params };
}

export class ConformanceWorkflow extends WorkflowEntrypoint {
  async run(event, step) {
    return conformanceRun(event, step, false);
  }
}

export class FatalWorkflow extends WorkflowEntrypoint {
  async run(event, step) {
    return conformanceRun(event, step, true);
  }
}

const ROUTE =
  /^\/client\/v4\/accounts\/([^/]+)\/workflows\/([^/]+)\/instances(?:\/([^/]+)(?:\/(status|events|step|delete|terminate)(?:\/([^/]+))?)?)?\/?$/;
const STATUS_ACTIONS = new Set(["pause", "resume", "terminate", "restart"]);
// Placeholders where production returns the deployed workflow's and version's UUIDs.
const WORKFLOW_ID = "00000000-0000-4000-8000-00000000f10e";
const VERSION_ID = "00000000-0000-4000-8000-0000000000e1";

const SHIM_HEADERS = { "content-type": "application/json", "cf-engine-shim": "1" };

class ShimError extends Error {
  constructor(slug, raw) {
    super(raw);
    this.slug = slug;
  }
}

function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: SHIM_HEADERS });
}

function ok(result) {
  return json(200, { success: true, errors: [], messages: [], result });
}

function fail(err) {
  return json(400, {
    success: false,
    errors: [{ code: 0, message: `workflows.api.error.${err.slug}` }],
    messages: [err.message],
    result: null,
  });
}

// The engine's slug from its message: `(instance.not_found) ...`, or for texts without one, what
// they say (the engine's validators throw "Workflow instance has invalid id" unslugged).
function classify(error) {
  const raw = error instanceof Error ? error.message : String(error);
  const slugged = /\(([a-z_]+\.[a-z_]+)\)/.exec(raw);
  if (slugged !== null) return new ShimError(slugged[1], raw);
  if (raw.includes("instance.not_found")) return new ShimError("instance.not_found", raw);
  if (/invalid id/i.test(raw)) return new ShimError("instance.invalid_id", raw);
  if (/batchCreate (should|only)/.test(raw)) return new ShimError("body", raw);
  return new ShimError("unclassified", raw);
}

async function readJson(request) {
  const text = await request.text();
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new ShimError("body", "request body is not JSON");
  }
}

// The status the engine reports now; a just-created instance may not have initialised yet.
async function currentStatus(wf, id) {
  try {
    return (await (await wf.get(id)).status()).status;
  } catch {
    return "queued";
  }
}

async function createdResult(wf, id) {
  return {
    id,
    status: await currentStatus(wf, id),
    version_id: VERSION_ID,
    workflow_id: WORKFLOW_ID,
    trigger_source: "api",
  };
}

function createOptions(item) {
  if (item === null || typeof item !== "object" || Array.isArray(item)) {
    throw new ShimError("body", "each instance must be a JSON object");
  }
  const options = {};
  if (item.instance_id !== undefined) options.id = item.instance_id;
  if (item.params !== undefined) options.params = item.params;
  return options;
}

async function createOne(wf, body) {
  const { id } = await wf.create(createOptions(body ?? {}));
  return createdResult(wf, id);
}

async function createBatch(wf, body) {
  if (!Array.isArray(body)) throw new ShimError("body", "batch body must be a JSON array");
  // The array ("legacy") form, like REST: existing ids and ids repeated inside the batch are
  // skipped by the engine and left out of its result.
  const created = await wf.createBatch(body.map(createOptions));
  return Promise.all(created.map(({ id }) => createdResult(wf, id)));
}

// Miniflare's explorer holds the step log with the engine's own step names (`echo-params-1`).
async function explorerDetail(origin, name, id) {
  try {
    const url = new URL(
      `/cdn-cgi/explorer/api/workflows/${encodeURIComponent(name)}/instances/${encodeURIComponent(id)}`,
      origin,
    );
    const response = await fetch(url);
    if (response.ok) return (await response.json()).result ?? {};
  } catch {
    // fall through: no detail
  }
  return {};
}

// Rich detail (params, timestamps, steps) comes from Miniflare's explorer; the status comes from
// the binding, which is what the engine itself reports.
async function getInstance(wf, origin, name, id) {
  const instance = await wf.get(id);
  const state = await instance.status();
  const detail = await explorerDetail(origin, name, id);
  const status = state.status;
  return {
    status,
    queued: detail.queued ?? null,
    start: detail.start ?? null,
    end: detail.end ?? null,
    params: detail.params ?? null,
    output: state.output ?? detail.output ?? null,
    error: state.error ?? detail.error ?? null,
    success: status === "complete" ? true : status === "errored" ? false : null,
    trigger: { source: "api" },
    versionId: VERSION_ID,
    step_count: detail.step_count ?? 0,
    steps: detail.steps ?? [],
  };
}

// One step of the explorer's log, found by its exact name (counter suffix included) and type.
// `status` is read from the log: complete, errored, or running while it has no end.
async function stepOutput(wf, origin, name, id, url) {
  await wf.get(id); // not_found from the engine for an unknown id
  const stepName = url.searchParams.get("name");
  const type = url.searchParams.get("type") ?? "step";
  const detail = await explorerDetail(origin, name, id);
  const step = (detail.steps ?? []).find((s) => s.name === stepName && s.type === type);
  if (step === undefined) throw new ShimError("shim.step_not_found", `no ${type} named ${stepName}`);
  const failed = step.success === false || (step.error !== null && step.error !== undefined);
  const done = step.success === true || step.finished === true;
  return {
    status: done ? "complete" : failed ? "errored" : type === "waitForEvent" ? "waiting" : "running",
    error: failed ? step.error ?? null : null,
    output: done ? step.output ?? null : null,
  };
}

async function changeStatus(wf, id, body) {
  const action = body && body.status;
  if (!STATUS_ACTIONS.has(action)) {
    throw new ShimError("body", `status must be one of pause, resume, terminate, restart`);
  }
  const instance = await wf.get(id);
  if (action === "terminate") await instance.terminate(body.rollback === true ? { rollback: true } : undefined);
  else await instance[action]();
  return { status: (await instance.status()).status, timestamp: new Date().toISOString() };
}

async function sendEvent(wf, id, type, body) {
  const instance = await wf.get(id);
  await instance.sendEvent({ type, payload: body ?? {} });
  return { instanceId: id, timestamp: new Date().toISOString() };
}

// REST workflow name -> binding, as declared in wrangler.jsonc.
function bindingFor(env, name) {
  if (name === "conformance-wf") return env.WF;
  if (name === "conformance-fatal-wf") return env.WF_FATAL;
  return undefined;
}

async function route(request, env) {
  const url = new URL(request.url);
  if (url.pathname === "/healthz") return ok({ ok: true });

  if (env.API_TOKEN && request.headers.get("authorization") !== `Bearer ${env.API_TOKEN}`) {
    return json(401, {
      success: false,
      errors: [{ code: 10000, message: "Authentication error" }],
      messages: [],
      result: null,
    });
  }

  const match = ROUTE.exec(url.pathname);
  if (match === null) throw new ShimError("shim.no_route", `no route for ${url.pathname}`);
  const [, , rawName, rawId, sub, rawType] = match;
  const name = decodeURIComponent(rawName);
  const id = rawId === undefined ? undefined : decodeURIComponent(rawId);
  const wf = bindingFor(env, name);
  if (wf === undefined) {
    throw new ShimError("shim.workflow_not_deployed", `workflow ${name} is not deployed here`);
  }
  const method = request.method;

  if (id === "batch" && sub === "delete" && method === "POST") {
    const body = await readJson(request);
    return ok(await wf.deleteBatch(body && Array.isArray(body.instances) ? body.instances : body));
  }
  if ((id === "batch" && sub === "terminate") || (id === "terminate" && sub === undefined)) {
    throw new ShimError(
      "shim.not_available_locally",
      `${method} ${url.pathname}: the local engine has no batch terminate or terminate-all job`,
    );
  }
  if (id !== undefined && sub === undefined && method === "DELETE") {
    await (await wf.get(id)).delete();
    return ok({ instanceId: id, timestamp: new Date().toISOString() });
  }
  if (id !== undefined && sub === "step" && rawType === undefined && method === "GET") {
    return ok(await stepOutput(wf, url.origin, name, id, url));
  }
  if (id === undefined && sub === undefined && method === "POST") {
    return ok(await createOne(wf, await readJson(request)));
  }
  if (id === "batch" && sub === undefined && method === "POST") {
    return ok(await createBatch(wf, await readJson(request)));
  }
  if (id !== undefined && sub === undefined && method === "GET") {
    return ok(await getInstance(wf, url.origin, name, id));
  }
  if (id !== undefined && sub === "status" && rawType === undefined && method === "PATCH") {
    return ok(await changeStatus(wf, id, await readJson(request)));
  }
  if (id !== undefined && sub === "events" && rawType !== undefined && method === "POST") {
    return ok(await sendEvent(wf, id, decodeURIComponent(rawType), await readJson(request)));
  }
  throw new ShimError("shim.no_route", `${method} ${url.pathname} is not served by the shim`);
}

export default {
  async fetch(request, env) {
    try {
      return await route(request, env);
    } catch (error) {
      return fail(error instanceof ShimError ? error : classify(error));
    }
  },
};
