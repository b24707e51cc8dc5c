// A SMART app against a MedRec-ZK gateway: SMART's own fhirclient library,
// as published on npm (package.json pins it; nothing here patches it), in
// a small Node web app on loopback, driven by client's TestFHIRClientLaunch
// (the patient approves) and TestFHIRClientLaunchByViewer (a viewer holding
// an anonymous share approves with a proof). The Go test plays the user's
// browser: it opens /launch, which starts the standalone launch
// (authorization code with PKCE, S256 required); the gateway sends the
// browser to the user's own MedRec app, the user approves there, and the
// browser comes back to /app with a code. The app trades it for a token
// (fhirclient does), then reads what a patient-facing app would (reads.cjs:
// the patient, a search followed page by page, $everything, a read by id,
// a bulk export) and answers the browser with what it got as JSON, for the
// Go test to check.
//
// Input comes from the environment: MEDREC_FHIR_BASE, the gateway's FHIR
// base, MEDREC_APP_ADDR (host:port to listen on), MEDREC_APP_CLIENT_ID and
// MEDREC_APP_SCOPE. The access token stays in this process's memory (the
// storage below): it is never printed nor put in a URL.

const http = require("node:http");
const smart = require("fhirclient");
const medrecReads = require("./reads.cjs");

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
    await medrecReads(client, out);
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
