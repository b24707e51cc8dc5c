// A SMART app against a MedRec-ZK gateway: SMART's own fhirclient library,
// as published on npm (package.json pins it; nothing here patches it), in
// a small Node web app on loopback, driven by client's TestFHIRClientLaunch
// (the patient approves) and TestFHIRClientLaunchByViewer (a viewer holding
// an anonymous share approves with a proof). The Go test plays the user's
// browser: it opens /launch, which starts the standalone launch
// (authorization code with PKCE, S256 required); the gateway sends the
// browser to the user's own MedRec app, the user approves there, and the
// browser comes back to /app with a code. The app
// trades it for a token (fhirclient does), then reads what a patient-facing
// app would — the patient, a search followed page by page, $everything, a
// read by id, a bulk export — and answers the browser with what it got as JSON, for the Go
// test to check.
//
// Input comes from the environment: MEDREC_FHIR_BASE, the gateway's FHIR
// base, MEDREC_APP_ADDR (host:port to listen on), MEDREC_APP_CLIENT_ID and
// MEDREC_APP_SCOPE. The access token stays in this process's memory (the
// storage below): it is never printed nor put in a URL.

const http = require("node:http");
const smart = require("fhirclient");

const base = process.env.MEDREC_FHIR_BASE;
const addr = process.env.MEDREC_APP_ADDR;
const clientId = process.env.MEDREC_APP_CLIENT_ID;
const scope = process.env.MEDREC_APP_SCOPE;
if (!base || !addr || !clientId || !scope) {
  console.error("set MEDREC_FHIR_BASE, MEDREC_APP_ADDR, MEDREC_APP_CLIENT_ID and MEDREC_APP_SCOPE");
  process.exit(2);
}
const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];

// One user (the test's browser): the launch state lives in memory.
const store = new Map();
const storage = {
  async get(key) { return store.get(key); },
  async set(key, value) { store.set(key, value); return value; },
  async unset(key) { return store.delete(key); },
};

const refOf = (r) => `${r.resourceType}/${r.id}`;

async function app(req, res) {
  const url = new URL(req.url, `http://${addr}`);
  if (url.pathname === "/launch") {
    return smart(req, res, storage).authorize({
      iss: base, clientId, scope, redirectUri: "/app", pkceMode: "required",
    });
  }
  if (url.pathname !== "/app") {
    res.writeHead(404).end();
    return;
  }
  const out = { error: "" };
  try {
    const client = await smart(req, res, storage).ready();
    out.patient = client.getPatientId();
    out.scope = client.state.tokenResponse.scope;
    out.tokenType = client.state.tokenResponse.token_type;
    out.refresh = !!client.state.tokenResponse.refresh_token;
    // The Patient resource, when the granted scope covers it (a viewer's
    // share may cover Observations only).
    if (/(^| )patient\/(Patient|\*)\.(r|read)/.test(out.scope)) out.patientResource = refOf(await client.patient.read());
    // A search, page by page: fhirclient follows the Bundles' next links.
    out.pages = [];
    await client.request("Observation?_count=1&_sort=date", {
      pageLimit: 0,
      onPage: (bundle) => out.pages.push({ total: bundle.total, refs: (bundle.entry || []).map((e) => refOf(e.resource)) }),
    });
    const every = await client.request(`Patient/${out.patient}/$everything`);
    out.everything = (every.entry || []).map((e) => refOf(e.resource)).sort();
    const first = out.pages[0]?.refs[0];
    if (first) out.read = refOf(await client.request(first));
    // Bulk export (patient level): kick off, poll the status, read a file.
    const kick = await client.request({ url: "Patient/$export", headers: { Prefer: "respond-async" }, includeResponse: true });
    const status = kick.response.headers.get("content-location");
    let manifest;
    for (let i = 0; i < 100 && !manifest; i++) {
      const r = await client.request({ url: status, includeResponse: true });
      if (r.response.status === 200) manifest = r.body;
      else await new Promise((ok) => setTimeout(ok, 100));
    }
    out.export = { kickOff: kick.response.status, files: {} };
    for (const o of (manifest && manifest.output) || []) {
      const ndjson = await client.request({ url: o.url, headers: { Accept: "application/fhir+ndjson" } });
      // NDJSON is neither JSON nor text/*: fhirclient hands back the Response.
      const text = typeof ndjson == "string" ? ndjson : await ndjson.text();
      out.export.files[o.type] = text.split("\n").filter((l) => l.trim()).length;
    }
    // Outside the scope: refused.
    try {
      await client.request("Condition?patient=" + out.patient);
      out.outsideScope = 200;
    } catch (e) {
      out.outsideScope = e.status || e.statusCode || -1;
    }
  } catch (e) {
    out.error = String(e && e.message || e);
  }
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify(out));
}

http.createServer((req, res) => {
  app(req, res).catch((e) => {
    res.writeHead(500, { "content-type": "text/plain" });
    res.end(String(e && e.message || e));
  });
}).listen(port, host, () => console.log("listening"));
