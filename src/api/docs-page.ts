import { Router } from 'express';
import { openApiDocument } from './openapi';

/**
 * GET /openapi.json and GET /docs. The docs page is rendered on the server from the document, with no script and nothing
 * fetched from elsewhere, so it works offline and cannot disagree with /openapi.json.
 */

type Json = Record<string, any>;

const escape = (text: unknown) =>
  String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

/** `code` spans for backticks in the document's prose. */
const prose = (text: unknown) => escape(text).replace(/`([^`]+)`/g, '<code>$1</code>');

const refName = (ref: string) => ref.split('/').pop() ?? ref;
const schemaLink = (ref: string) => `<a href="#schema-${escape(refName(ref))}">${escape(refName(ref))}</a>`;

/** A one-line type: `string | null`, `array of Generation`, `"queued" | "running"`. */
function typeOf(schema: Json | undefined): string {
  if (!schema || Object.keys(schema).length === 0) return 'any';
  if (schema.$ref) return schemaLink(schema.$ref);
  if (schema.anyOf) return (schema.anyOf as Json[]).map(typeOf).join(' | ');
  if (schema.const !== undefined) return `<code>${escape(JSON.stringify(schema.const))}</code>`;
  if (schema.enum) return (schema.enum as unknown[]).map((v) => `<code>${escape(JSON.stringify(v))}</code>`).join(' | ');
  const types = ([] as string[]).concat(schema.type ?? 'any');
  return types.map((t) => (t === 'array' ? `array of ${typeOf(schema.items)}` : t === 'object' && schema.additionalProperties ? `map of ${typeOf(schema.additionalProperties)}` : t)).join(' | ');
}

function constraints(schema: Json): string {
  const notes: string[] = [];
  const show = (value: unknown): string => (Array.isArray(value) ? value.map(show).join(', ') : typeof value === 'string' ? value : JSON.stringify(value));
  const add = (key: string, label: string) => schema[key] !== undefined && notes.push(`${label} ${escape(show(schema[key]))}`);
  add('format', 'format');
  add('minLength', 'min length');
  add('maxLength', 'max length');
  add('minimum', '≥');
  add('maximum', '≤');
  add('maxItems', 'at most');
  add('pattern', 'pattern');
  add('default', 'default');
  add('examples', 'e.g.');
  const inner = schema.anyOf ? (schema.anyOf as Json[]).find((s) => s.type !== 'null') : undefined;
  return [...notes, inner && !inner.$ref ? constraints(inner) : ''].filter(Boolean).join(', ');
}

function propertiesTable(schema: Json, depth = 0): string {
  const properties: Record<string, Json> = schema.properties ?? {};
  if (Object.keys(properties).length === 0) return `<p>${typeOf(schema)} ${escape(constraints(schema))}</p>`;
  const required = new Set<string>(schema.required ?? []);
  const rows = Object.entries(properties).map(([name, property]) => {
    const nested = property.type === 'object' && property.properties && depth < 3 ? propertiesTable(property, depth + 1) : '';
    const items = property.type === 'array' && property.items?.properties && depth < 3 ? propertiesTable(property.items, depth + 1) : '';
    return `<tr><td><code>${escape(name)}</code>${required.has(name) ? '' : ' <small>optional</small>'}</td><td>${typeOf(property)}</td><td>${prose(property.description)} <small>${constraints(property)}</small>${nested}${items}</td></tr>`;
  });
  return `<table><thead><tr><th>field</th><th>type</th><th>notes</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function parameterRows(doc: Json, parameters: Json[]): string {
  if (parameters.length === 0) return '';
  const rows = parameters.map((p) => {
    const param: Json = p.$ref ? doc.components.parameters[refName(p.$ref)] : p;
    return `<tr><td><code>${escape(param.name)}</code>${param.required ? '' : ' <small>optional</small>'}</td><td>${escape(param.in)}</td><td>${typeOf(param.schema)}</td><td>${prose(param.description)} <small>${constraints(param.schema ?? {})}</small></td></tr>`;
  });
  return `<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th><th>notes</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function responseRows(doc: Json, responses: Json): string {
  const rows = Object.entries(responses).map(([status, r]: [string, Json]) => {
    const response: Json = r.$ref ? doc.components.responses[refName(r.$ref)] : r;
    const [type, media] = Object.entries(response.content ?? {})[0] ?? [];
    const body = media ? `${escape(type)}: ${typeOf((media as Json).schema)}` : '';
    const headers = Object.keys(response.headers ?? {}).map((h) => `<code>${escape(h)}</code>`).join(', ');
    return `<tr><td class="status s${escape(status[0])}">${escape(status)}</td><td>${prose(response.description)}</td><td>${body}</td><td>${headers}</td></tr>`;
  });
  return `<h4>Responses</h4><table><thead><tr><th>status</th><th>meaning</th><th>body</th><th>headers</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function operationSection(doc: Json, method: string, path: string, op: Json): string {
  const security = (op.security as Json[]).map((s) => Object.keys(s)[0]);
  const auth = security.length === 0 ? 'none' : security.map((name) => prose(doc.components.securitySchemes[name].description)).join(' or ');
  const body = op.requestBody ? `<h4>Request body</h4><p>application/json: ${typeOf(op.requestBody.content['application/json'].schema)}</p>` : '';
  return `<section class="op" id="op-${escape(op.operationId)}">
<h3><span class="method ${escape(method)}">${escape(method.toUpperCase())}</span> <code>${escape(path)}</code></h3>
<p><strong>${prose(op.summary)}</strong>${op.description ? ` ${prose(op.description)}` : ''}</p>
<p><small>Authorization: Bearer — ${auth}</small></p>
${parameterRows(doc, op.parameters ?? [])}${body}${responseRows(doc, op.responses)}
</section>`;
}

export function renderDocsPage(doc: Json): string {
  const operations = Object.entries(doc.paths as Json).flatMap(([path, item]) => Object.entries(item as Json).map(([method, op]) => ({ path, method, op: op as Json })));
  const tags = (doc.tags as Json[]).map((tag) => ({ name: String(tag.name), description: tag.description, ops: operations.filter((o) => o.op.tags[0] === tag.name) }));
  const nav = tags
    .map((t) => `<li>${escape(t.name)}<ul>${t.ops.map((o) => `<li><a href="#op-${escape(o.op.operationId)}" title="${escape(o.method.toUpperCase())} ${escape(o.path)}"><span class="method ${escape(o.method)}">${escape(o.method.toUpperCase())}</span> ${escape(o.path)}</a></li>`).join('')}</ul></li>`)
    .join('');
  const sections = tags.map((t) => `<h2 id="tag-${escape(t.name)}">${escape(t.name)} <small>${prose(t.description)}</small></h2>${t.ops.map((o) => operationSection(doc, o.method, o.path, o.op)).join('')}`);
  const webhooks = Object.entries((doc.webhooks ?? {}) as Json).map(([name, item]) => {
    const post = (item as Json).post as Json;
    return `<section class="op" id="webhook-${escape(name)}"><h3><span class="method post">POST</span> <code>your URL</code> — ${escape(name)}</h3><p><strong>${prose(post.summary)}</strong> ${prose(post.description)}</p><p>application/json: ${typeOf(post.requestBody.content['application/json'].schema)}</p></section>`;
  });
  const schemas = Object.entries(doc.components.schemas as Json).map(
    ([name, schema]) => `<section class="schema" id="schema-${escape(name)}"><h3>${escape(name)}</h3>${schema.description ? `<p>${prose(schema.description)}</p>` : ''}${propertiesTable(schema as Json)}</section>`,
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(doc.info.title)} — reference</title><style>${STYLE}</style></head>
<body><nav aria-label="operations"><p><strong>${escape(doc.info.title)}</strong> v${escape(doc.info.version)}</p><ul>${nav}<li><a href="#webhooks">webhooks</a></li><li><a href="#schemas">schemas</a></li></ul></nav>
<main><h1>${escape(doc.info.title)}</h1><p>${prose(doc.info.description)}</p>
<p>OpenAPI ${escape(doc.openapi)}: <a href="/openapi.json">/openapi.json</a> · <a href="/">status page</a></p>
${sections.join('\n')}
<h2 id="webhooks">webhooks <small>what this service sends to you</small></h2>${webhooks.join('')}
<h2 id="schemas">schemas</h2>${schemas.join('\n')}</main></body></html>`;
}

const STYLE = `body{margin:0;font:14px/1.45 system-ui,sans-serif;color:#1d1d1f;display:flex}
nav{position:sticky;top:0;height:100vh;overflow:auto;width:300px;flex:none;padding:12px;background:#f4f5f7;border-right:1px solid #ddd;box-sizing:border-box}
nav ul{list-style:none;padding-left:8px;margin:4px 0}nav a{text-decoration:none;color:inherit;font-size:12px;display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}main{padding:16px 28px;max-width:1100px;min-width:0}
h2{border-bottom:2px solid #ddd;margin-top:32px}.op,.schema{border:1px solid #e2e2e2;border-radius:6px;padding:4px 14px 10px;margin:12px 0}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{border-bottom:1px solid #eee;text-align:left;padding:4px 6px;vertical-align:top}
code{font:12px ui-monospace,monospace;background:#f1f1f3;padding:0 3px;border-radius:3px}small{color:#666}
.method{display:inline-block;min-width:52px;text-align:center;font:bold 11px ui-monospace,monospace;color:#fff;border-radius:3px;padding:2px 4px;background:#555}
.get{background:#1f6feb}.post{background:#1a7f37}.put{background:#9a6700}.delete{background:#cf222e}
.status{font-weight:bold}.s2{color:#1a7f37}.s4{color:#9a6700}.s5{color:#cf222e}`;

export function apiDocsRouter(): Router {
  const router = Router();
  let page: string | undefined;
  router.get('/openapi.json', (_req, res) => {
    res.json(openApiDocument());
  });
  router.get('/docs', (_req, res) => {
    page ??= renderDocsPage(openApiDocument());
    res.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'").type('html').send(page);
  });
  return router;
}
