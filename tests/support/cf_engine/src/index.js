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
// Error mapping. Errors reach us over RPC as plain Error objects whose message carries the engine's
// slug, e.g. `WorkflowError: (instance.already_exists) Workflow instance with id "a" already exists`.
// The shim maps on that text:
//
//   slug                         HTTP                      errors[0].code
//   instance.not_found           404                       10400
//   instance.already_exists      DUPLICATE_HTTP_STATUS     10405   (production status unverified)
//   instance.invalid_id          400                       0       ("Workflow instance has invalid id")
//   instance.cannot_terminate    409                       0
//   instance.cannot_restart      409                       0
//   body (batch size, JSON)      400                       0
//   anything else                500                       10001   (workflows.api.error.internal_server)
//
// Code 0 means "production's numeric code is not known"; compare on the slug instead. errors[0].message
// is `workflows.api.error.<slug>`, and `messages` carries the engine's own text verbatim.

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
  /^\/client\/v4\/accounts\/([^/]+)\/workflows\/([^/]+)\/instances(?:\/([^/]+)(?:\/(status|events)(?:\/([^/]+))?)?)?\/?$/;
const STATUS_ACTIONS = new Set(["pause", "resume", "terminate", "restart"]);
// Placeholders where production returns the deployed workflow's and version's UUIDs.
const WORKFLOW_ID = "00000000-0000-4000-8000-00000000f10e";
const VERSION_ID = "00000000-0000-4000-8000-0000000000e1";

class ShimError extends Error {
  constructor(http, code, slug, raw) {
    super(raw);
    this.http = http;
    this.code = code;
    this.slug = slug;
  }
}

function json(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function ok(result) {
  return json(200, { success: true, errors: [], messages: [], result });
}

function fail(err) {
  return json(err.http, {
    success: false,
    errors: [{ code: err.code, message: `workflows.api.error.${err.slug}` }],
    messages: [err.message],
    result: null,
  });
}

function classify(error, env) {
  const raw = error instanceof Error ? error.message : String(error);
  if (raw.includes("instance.not_found")) return new ShimError(404, 10400, "instance.not_found", raw);
  if (raw.includes("instance.already_exists")) {
    const http = Number.parseInt(env.DUPLICATE_HTTP_STATUS || "409", 10);
    return new ShimError(http, 10405, "instance.already_exists", raw);
  }
  if (raw.includes("instance.duplicate_in_batch")) {
    return new ShimError(400, 10415, "instance.duplicate_in_batch", raw);
  }
  if (/invalid id|instance\.invalid_id/i.test(raw)) return new ShimError(400, 0, "instance.invalid_id", raw);
  if (raw.includes("instance.cannot_terminate")) return new ShimError(409, 0, "instance.cannot_terminate", raw);
  if (raw.includes("instance.cannot_restart")) return new ShimError(409, 0, "instance.cannot_restart", raw);
  if (/batchCreate (should|only)/.test(raw)) return new ShimError(400, 0, "body", raw);
  return new ShimError(500, 10001, "internal_server", raw);
}

async function readJson(request) {
  const text = await request.text();
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new ShimError(400, 0, "body", "request body is not JSON");
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
    throw new ShimError(400, 0, "body", "each instance must be a JSON object");
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
  if (!Array.isArray(body)) throw new ShimError(400, 0, "body", "batch body must be a JSON array");
  // The array ("legacy") form, like REST: existing ids and ids repeated inside the batch are
  // skipped by the engine and left out of its result.
  const created = await wf.createBatch(body.map(createOptions));
  return Promise.all(created.map(({ id }) => createdResult(wf, id)));
}

// Rich detail (params, timestamps, steps) comes from Miniflare's explorer; the status comes from
// the binding, which is what the engine itself reports.
async function getInstance(wf, origin, name, id) {
  const instance = await wf.get(id);
  const state = await instance.status();
  let detail = {};
  try {
    const url = new URL(
      `/cdn-cgi/explorer/api/workflows/${encodeURIComponent(name)}/instances/${encodeURIComponent(id)}`,
      origin,
    );
    const response = await fetch(url);
    if (response.ok) detail = (await response.json()).result ?? {};
  } catch {
    detail = {};
  }
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

async function changeStatus(wf, id, body) {
  const action = body && body.status;
  if (!STATUS_ACTIONS.has(action)) {
    throw new ShimError(400, 0, "body", `status must be one of pause, resume, terminate, restart`);
  }
  const instance = await wf.get(id);
  await instance[action]();
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
  if (match === null) throw new ShimError(404, 0, "route.not_found", `no route for ${url.pathname}`);
  const [, , rawName, rawId, sub, rawType] = match;
  const name = decodeURIComponent(rawName);
  const id = rawId === undefined ? undefined : decodeURIComponent(rawId);
  const wf = bindingFor(env, name);
  if (wf === undefined) {
    throw new ShimError(404, 10200, "workflow.not_found", `workflow ${name} is not deployed here`);
  }
  const method = request.method;

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
  throw new ShimError(405, 0, "method.not_allowed", `${method} ${url.pathname} is not served by the shim`);
}

export default {
  async fetch(request, env) {
    try {
      return await route(request, env);
    } catch (error) {
      return fail(error instanceof ShimError ? error : classify(error, env));
    }
  },
};
