package desk

// The desk's pages: server-rendered, no script, printable where a patient
// takes something home. Landmarks, labels on every field, one h1 a page.
const pageTemplates = `
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Desk — {{.Provider}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:900px;margin:1rem auto;padding:0 1rem;color:#1a1a1a}
header{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;border-bottom:1px solid #ccc;padding-bottom:.5rem}
nav a{margin-right:1rem;color:#0645ad} label{display:block;margin:.4rem 0} input,select{font-size:1rem;padding:.3rem;max-width:100%}
.err{background:#fde8e8;padding:.6rem;border-left:4px solid #b00020} .ok{background:#e6f4ea;padding:.6rem;border-left:4px solid #1e7b34}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left} th{white-space:nowrap}
@media (max-width:600px){td{overflow-wrap:anywhere}}
caption{text-align:left;font-weight:600;margin:.5rem 0}
code{word-break:break-all} .big{font-size:2rem;font-family:monospace;letter-spacing:.1rem}
@media print{header,nav,form,.noprint{display:none}}
</style></head><body>
<header><strong>Desk of {{.Provider}}</strong>{{if .Me}}<nav aria-label="desk"><a href="/">Patients</a>{{if .Me.Admin}}<a href="/import">Import</a><a href="/staff">Staff</a>{{end}}</nav>
<span>{{.Me.Name}} ({{.Me.Role}})</span><form method="post" action="/logout"><input type="hidden" name="csrf" value="{{.CSRF}}"><button id="logout">Log out</button></form>{{end}}</header>
<main>
{{if .Error}}<p class="err" id="error" role="alert">{{.Error}}</p>{{end}}{{if .Flash}}<p class="ok" id="flash" role="status">Done: {{.Flash}}.</p>{{end}}
{{end}}
{{define "foot"}}</main></body></html>{{end}}

{{define "message"}}{{template "head" .}}<h1>Something went wrong</h1><p class="err" id="error">{{.Message}}</p><p><a href="/">Back to the desk</a></p>{{template "foot" .}}{{end}}

{{define "login"}}{{template "head" .}}<h1>Sign in</h1>
<form method="post" action="/login"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="staff">Staff id</label><input id="staff" name="staff" value="{{.Staff}}" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<p><button id="signin">Sign in</button></p></form>{{template "foot" .}}{{end}}

{{define "home"}}{{template "head" .}}<h1>Patients</h1>
<form method="get" action="/find" id="search"><fieldset><legend>Find a patient (any of these; all you give must match)</legend>
<label for="qname">Name (a part of it)</label><input id="qname" name="name" value="{{.Q.Name}}">
<label for="qbirth">Birth date (YYYY-MM-DD, or a year)</label><input id="qbirth" name="birthdate" value="{{.Q.BirthDate}}">
<label for="qid">Record number</label><input id="qid" name="identifier" value="{{.Q.Identifier}}">
<p><button id="find-button">Find</button></p></fieldset></form>
{{if .Searched}}<table id="found"><caption>{{len .Found}} found{{if .More}} (the first {{len .Found}}: narrow the search){{end}}</caption>
<tr><th scope="col">Patient</th><th scope="col">Name</th><th scope="col">Born</th><th scope="col">Record numbers</th></tr>
{{range .Found}}<tr><td><a href="/patient?id={{.ID}}">{{.ID}}</a></td><td>{{range $i, $n := .Names}}{{if $i}}; {{end}}{{$n}}{{end}}</td><td>{{.BirthDate}}</td><td>{{range $i, $x := .Identifiers}}{{if $i}}, {{end}}{{$x}}{{end}}</td></tr>{{end}}</table>{{end}}
<form method="get" action="/patient"><label for="find">Open a patient by the provider's id</label>
<input id="find" name="id" value="{{.Find}}" required> <button id="open">Open</button></form>
<form method="post" action="/patients"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="newid">New patient: the provider's id for them</label><input id="newid" name="id" value="{{.NewID}}" required> <button id="create">Create</button></form>
<h2>This gateway</h2>
{{with .Status}}<p id="status">{{.Log.Entries}} access-log entries; {{if .Anchor.Batch}}last anchor: batch {{.Anchor.Batch}} at {{.Anchor.Time}}, {{if .Anchor.Published}}on chain{{else}}not yet on chain{{end}}; {{.Anchor.UnanchoredEntries}} entries wait for the next one{{else}}nothing anchored yet{{end}}. Chain head {{.ChainHead}}.</p>{{end}}
{{if .StatusError}}<p class="err">{{.StatusError}}</p>{{end}}
{{template "foot" .}}{{end}}

{{define "patient"}}{{template "head" .}}<h1>Patient {{.P.ID}}</h1>
<p id="state">{{.P.Records}} records, {{if .P.Anchored}}anchored{{else}}not anchored yet{{end}}. Relationship: <strong>{{.P.Relationship.State}}</strong>{{with .P.Relationship.DeskCode}} (desk code <code>{{.}}</code>){{end}}{{with .P.Relationship.Owner}}; rotated {{$.P.Relationship.Rotations}}×, {{$.P.Relationship.GrantsInForce}} grants in force{{end}}.</p>
<h2>Enrol (first provider only)</h2>
<p>The patient's app shows an <em>enrolment code</em> only until the patient is enrolled somewhere. If it shows one, enrol it here; if it shows a desk code instead, skip this.</p>
<form method="post" action="/patient/enrol"><input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="patient" value="{{.P.ID}}">
<label for="commitment">Enrolment code (0x…)</label><input id="commitment" name="commitment" value="{{.Commitment}}" size="70" autocomplete="off" required> <button id="enrol">Enrol</button></form>
<h2>Claim code</h2>
<p>Ask the patient to open <strong>Connect</strong> next to {{.Provider}} in their app and read you the desk code it shows. The claim code you print works only for that app.</p>
<form method="post" action="/patient/claim-code"><input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="patient" value="{{.P.ID}}">
<label for="deskcode">Desk code from the patient's app</label><input id="deskcode" name="deskcode" value="{{.DeskCode}}" placeholder="XXXXX-XXXXX-XXXXX-XXXXX" autocomplete="off" required> <button id="issue">Issue and print</button></form>
{{if and .Me.Admin .P.Relationship.Tag}}<h2>Undo the mapping</h2>
<p>Only if the relationship was opened by someone who is not this patient. The relationship stops reading this patient's records; the reason goes to the patient's access log.</p>
<form method="post" action="/patient/unmap"><input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="patient" value="{{.P.ID}}">
<label for="reason">Reason</label><input id="reason" name="reason" value="{{.Reason}}" size="70" required> <button id="unmap">Undo the mapping</button></form>{{end}}
{{template "foot" .}}{{end}}

{{define "print"}}{{template "head" .}}<h1>Your claim code for {{.Provider}}</h1>
<p>Patient {{.Patient}}. In the MedRec-ZK app, open <strong>Connect</strong> next to {{.Provider}} and type:</p>
<p class="big" id="claim-code">{{.Code.Code}}</p><img src="{{.QR}}" alt="QR code of the claim code" width="200" height="200">
<p>It works once, until {{when .Code.Expires}}, and only in the app that showed desk code <code id="bound">{{.DeskCode}}</code>.</p>
<p class="noprint"><a href="/patient?id={{.Patient}}">Back to the patient</a></p>
{{template "foot" .}}{{end}}

{{define "import"}}{{template "head" .}}<h1>Import a patient's records</h1>
{{with .Bulk}}<section id="bulk-report" aria-labelledby="bulk-title"><h2 id="bulk-title">{{if $.Refusals}}Imported in part{{else}}Imported{{end}}</h2>
<table><caption>What went in</caption>
<tr><th scope="row">Files</th><td id="bulk-files">{{.Files}}</td></tr>
<tr><th scope="row">Lines</th><td id="bulk-lines">{{.Lines}}</td></tr>
<tr><th scope="row">Patients</th><td id="bulk-patients">{{.Patients}}</td></tr>
<tr><th scope="row">Resources</th><td id="bulk-resources">{{.Resources}} ({{.Shared}} shared: organizations, practitioners …)</td></tr>
<tr><th scope="row">Created</th><td id="bulk-created">{{.Created}}</td></tr>
<tr><th scope="row">Updated</th><td id="bulk-updated">{{.Updated}}</td></tr>
<tr><th scope="row">Unchanged</th><td id="bulk-unchanged">{{.Unchanged}}</td></tr></table>
{{if not .Files}}{{with .Summary}}<p id="bulk-summary">The gateway: {{.}}.</p>{{end}}{{end}}
{{with $.Refusals}}<table id="bulk-refused"><caption class="err">{{len .}} refused, nothing of theirs written: fix their lines and import the same files again (what went in stays, unchanged)</caption>
<tr><th scope="col">File</th><th scope="col">Line</th><th scope="col">Patient</th><th scope="col">Reason</th></tr>
{{range .}}<tr>{{if .File}}<td>{{.File}}</td><td>{{.Line}}</td><td>{{if .Patient}}{{.Patient}}{{else}}(a shared resource){{end}}</td><td>{{.Reason}}</td>{{else}}<td colspan="4">{{.Reason}}</td>{{end}}</tr>{{end}}</table>{{end}}
</section>{{end}}
<p>A FHIR R4 Bundle of one patient (a Synthea file, an EHR export): all of it is stored, or none of it. Importing the same file again changes nothing.</p>
<form method="post" action="/import" enctype="multipart/form-data"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="bundle">Bundle (JSON)</label><input id="bundle" name="bundle" type="file" accept=".json,application/fhir+json,application/json" required> <button id="import">Import</button></form>
{{if .Me.Admin}}<h2 id="bulk">Bulk import (NDJSON)</h2>
<p>FHIR bulk data: one resource per line, one file per resource type (a Synthea bulk export, an EHR's export). Choose all the files of one export at once. Each patient is stored whole or not at all: a patient with a bad line is refused, the others go in. Importing the same files again changes nothing.</p>
<form method="post" action="/import/ndjson" enctype="multipart/form-data"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="ndjson">NDJSON files</label><input id="ndjson" name="file" type="file" multiple accept=".ndjson,.jsonl,application/fhir+ndjson" required> <button id="import-ndjson">Import the files</button></form>
{{end}}
{{template "foot" .}}{{end}}

{{define "staff"}}{{template "head" .}}<h1>Staff</h1>
<table id="staff-list"><caption>Accounts of this desk</caption><tr><th scope="col">Id</th><th scope="col">Name</th><th scope="col">Role</th><th scope="col">State</th></tr>
{{range .Staff}}<tr><td>{{.ID}}</td><td>{{.Name}}</td><td>{{.Role}}</td><td>{{if .Disabled}}disabled{{else}}active{{end}}</td></tr>{{end}}</table>
<h2>Add someone</h2>
<form method="post" action="/staff"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="sid">Staff id</label><input id="sid" name="id" value="{{.New.ID}}" required>
<label for="sname">Name</label><input id="sname" name="name" value="{{.New.Name}}" required>
<label for="srole">Role</label><select id="srole" name="role"><option value="clerk">clerk</option><option value="admin">admin</option></select>
<label for="spw">Password (12 characters or more)</label><input id="spw" name="password" type="password" autocomplete="new-password" required>
<p><button id="add">Add</button></p></form>
{{template "foot" .}}{{end}}
`
