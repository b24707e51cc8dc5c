// What a SMART app reads once its launch is done, the same in Node
// (smart-app.cjs) and in a browser (client's TestBrowserAppInChromium loads
// this file with fhirclient's browser build): the patient, when the scope
// covers it; a search followed page by page; $everything; a read by id; a
// bulk export (kick-off, status, NDJSON files); and a type outside the
// scope, which must be refused. client is fhirclient's Client; out gets the
// results.
async function medrecReads(client, out) {
  const refOf = (r) => `${r.resourceType}/${r.id}`;
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
}

if (typeof module !== "undefined") module.exports = medrecReads;
