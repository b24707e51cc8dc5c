// A stock FHIR client against a MedRec-ZK gateway: fhir-kit-client, as
// published on npm (package.json pins it; nothing here patches it), driven
// by dbmanager's TestStockFHIRClient on loopback. It reads what a FHIR app
// would — the CapabilityStatement, a search followed page by page both
// ways, _include, read, vread, If-None-Match, instance history,
// Patient/[id]/$everything, an unsupported parameter strictly and
// leniently — and writes what it got as one JSON object on stdout, for the
// Go test to check against the records it imported.
//
// Input comes from the environment, never from argv: MEDREC_FHIR_BASE, the
// gateway's FHIR base URL, and MEDREC_FHIR_TOKEN_FILE, a file holding the
// bearer token of the reader's session (a secret: never printed).

import { readFileSync } from 'node:fs';
import { Client } from 'fhir-kit-client';

const baseUrl = process.env.MEDREC_FHIR_BASE;
const tokenFile = process.env.MEDREC_FHIR_TOKEN_FILE;
if (!baseUrl || !tokenFile) {
  console.error('set MEDREC_FHIR_BASE and MEDREC_FHIR_TOKEN_FILE');
  process.exit(2);
}
const client = new Client({ baseUrl, bearerToken: readFileSync(tokenFile, 'utf8').trim() });

const link = (bundle, rel) => (bundle.link || []).find((l) => l.relation === rel)?.url || '';
const refs = (bundle, mode) =>
  (bundle.entry || []).filter((e) => e.search?.mode === mode).map((e) => `${e.resource.resourceType}/${e.resource.id}`);
const versionOf = (entry) => entry.link?.find((l) => l.relation === 'latest-version')?.url.split('/_history/')[1];

// failure returns the status and resource type of a refused request.
async function failure(promise) {
  try {
    await promise;
    return { status: 200 };
  } catch (e) {
    if (!e.response) throw e;
    return { status: e.response.status, resourceType: e.response.data?.resourceType || '' };
  }
}

const out = {};
const cs = await client.capabilityStatement();
out.fhirVersion = cs.fhirVersion;
out.observationParams = cs.rest[0].resource.find((r) => r.type === 'Observation').searchParam.map((p) => p.name);

// The reader's patient: the one Patient its search finds.
const patients = await client.search({ resourceType: 'Patient' });
out.patient = patients.entry[0].resource.id;

// A search, page by page with the next links, then back with the previous ones.
out.pages = [];
let page = await client.search({ resourceType: 'Observation', searchParams: { _sort: '-date', _count: 10 } });
const forward = [];
while (page) {
  forward.push(page);
  out.pages.push({
    total: page.total,
    self: link(page, 'self'),
    entries: (page.entry || []).map((e) => ({
      ref: `${e.resource.resourceType}/${e.resource.id}`,
      fullUrl: e.fullUrl,
      version: versionOf(e),
      date: e.resource.effectiveDateTime,
    })),
  });
  page = await client.nextPage({ bundle: page });
}
out.back = [];
for (let p = forward[forward.length - 1]; p; p = await client.prevPage({ bundle: p })) {
  out.back.unshift(refs(p, 'match'));
}

// _include: the encounters of the Observations with the first one's code.
const first = forward[0].entry[0].resource;
const coding = first.code.coding[0];
const inc = await client.search({
  resourceType: 'Observation',
  searchParams: { code: `${coding.system}|${coding.code}`, _include: 'Observation:encounter' },
});
out.include = { code: `${coding.system}|${coding.code}`, total: inc.total, matches: refs(inc, 'match'), included: refs(inc, 'include') };

// read, vread, If-None-Match, history.
const read = await client.read({ resourceType: 'Observation', id: first.id });
const vread = await client.vread({ resourceType: 'Observation', id: first.id, version: '1' });
out.read = { id: read.id, same: JSON.stringify(read) === JSON.stringify(first), vreadId: vread.id };
out.notModified = await failure(
  client.read({ resourceType: 'Observation', id: first.id, options: { headers: { 'If-None-Match': 'W/"1"' } } }),
);
const history = await client.history({ resourceType: 'Observation', id: first.id });
out.history = { type: history.type, total: history.total, etags: history.entry.map((e) => e.response.etag) };

// Patient/[id]/$everything, every page.
out.everything = { total: -1, refs: [] };
for (
  let p = await client.operation({ name: '$everything', resourceType: 'Patient', id: out.patient, method: 'GET', input: { _count: 25 } });
  p;
  p = await client.nextPage({ bundle: p })
) {
  out.everything.total = p.total;
  out.everything.refs.push(...refs(p, 'match'));
}

// An unsupported parameter: refused strictly, ignored leniently.
out.unsupported = await failure(client.search({ resourceType: 'Observation', searchParams: { name: 'x' } }));
const lenient = await client.search({
  resourceType: 'Observation',
  searchParams: { name: 'x', _count: 1 },
  options: { headers: { Prefer: 'handling=lenient' } },
});
out.lenient = { total: lenient.total, self: link(lenient, 'self') };

process.stdout.write(JSON.stringify(out));
