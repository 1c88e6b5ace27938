// Config: the effective config as the server redacts it, as a form. Save sends the changed
// fields as a JSON merge patch to config.patch with the hash config.get gave (so a change
// made meanwhile by someone else is refused, not overwritten). The server's validation
// issues are shown at their fields.

import { $, el, setAlert, shownName, shownText } from "./dom.js";

const REDACTED = "__OPENCLAW_REDACTED__";
let ctx;
let loaded = null; // the config.get answer
let fields = []; // {path, keys, kind, original, input, error}
// A save in flight: one at a time (a second, with the same hash, was refused as a change made
// meanwhile, or overtook the first). Enter in a field submits the form, Save disabled or not.
let saving = false;

export function init(context) {
  ctx = context;
  $("config-save").addEventListener("click", save);
  $("config-reload").addEventListener("click", () => load());
  $("config-form").addEventListener("input", () => {
    $("config-save").disabled = saving || !changes().size;
  });
  $("config-form").addEventListener("submit", (event) => {
    event.preventDefault();
    save();
  });
}

// Edits not saved yet are the operator's work: coming back to the screen, or reconnecting after
// a restart, keeps them ("Discard and reload" drops them). Save still sends the hash they were
// made on, so a file changed meanwhile is refused rather than overwritten.
export async function show() {
  if (loaded && changes().size) return;
  await load({ keepEdits: true });
}

// `keepEdits`: edits typed into the form on screen while config.get was answered (a slow
// gateway) are kept, as those made before are. A form built again keeps the focus on the
// field that had it: a keyboard user is not sent back to the start of the page.
async function load({ keepEdits = false } = {}) {
  setAlert($("config-message"), "");
  delete $("config-message").dataset.kind; // a save's "ok" is not this load's
  let answer;
  try {
    answer = await ctx.gw.request("config.get");
  } catch (error) {
    setAlert($("config-message"), error.message);
    return;
  }
  if (keepEdits && loaded && changes().size) return;
  loaded = answer;
  const focusedPath = $("config-form").contains(document.activeElement) ? document.activeElement.dataset.path : undefined;
  const hash = loaded.hash ? loaded.hash.slice(0, 12) : "none";
  $("config-meta").textContent = `${loaded.exists ? loaded.path : "embedded default (no file yet)"} · hash ${hash}${loaded.valid ? "" : " · the file on disk is invalid"}`;
  fields = [];
  $("config-form").replaceChildren(...section(loaded.config, ""));
  const refocus = fields.find((f) => f.path === focusedPath);
  if (refocus) refocus.input.focus();
  $("config-save").disabled = true;
  // A file edited by hand into one the gateway refuses (it runs on the last good one): what is
  // wrong with it, where an operator looks to fix it.
  const notes = [];
  if (!loaded.valid && loaded.issues && loaded.issues.length) {
    const issues = loaded.issues.map((issue) => (issue.path ? `${shownName(issue.path)}: ${shownText(issue.message)}` : shownText(issue.message)));
    notes.push("The file on disk is invalid:", ...issues);
  }
  if (loaded.warnings.length) notes.push("Warnings:", ...loaded.warnings.map(shownText));
  // One line each (the alert keeps a message's own line breaks): strung together, the issues
  // and their lines ran into one another.
  if (notes.length) setAlert($("config-message"), notes.join("\n"));
}

// `keys`: the names from the top down. The dotted `path` is how the server names a place in its
// issues; a name may hold a dot itself (a header name), so the patch is built from `keys`.
// A key is shown as names are (shownName: its bidi controls and invisible characters as code
// points), and sent as it is.
function section(value, path, keys = []) {
  const out = [];
  for (const [key, item] of Object.entries(value)) {
    const itemPath = path ? `${path}.${key}` : key;
    const itemKeys = [...keys, key];
    if (item && typeof item === "object" && !Array.isArray(item)) {
      const children = section(item, itemPath, itemKeys);
      out.push(el("fieldset", { class: "group", dataset: { path: itemPath } }, el("legend", { text: shownName(key) }), children.length ? children : el("p", { class: "muted small", text: "(nothing set)" })));
    } else {
      out.push(field(key, itemPath, itemKeys, item));
    }
  }
  return out;
}

function field(key, path, keys, value) {
  // By position: a name is anyone's text, and `x.id` and `x_id` would read alike as an id.
  const id = `cfg-${fields.length}`;
  const errorId = `${id}-error`;
  let input;
  let kind;
  const secret = value === REDACTED;
  if (typeof value === "boolean") {
    kind = "boolean";
    input = el("input", { type: "checkbox", id, checked: value });
  } else if (typeof value === "number") {
    kind = "number";
    // Emptied, it is saved as null, which deletes the key: the gateway's default applies
    // again (what clearing a field means in an editor of settings). The placeholder says so.
    input = el("input", { type: "number", id, value: String(value), step: "any", placeholder: "default" });
  } else if (Array.isArray(value) || value === null) {
    kind = "json";
    input = el("textarea", { id, rows: Array.isArray(value) && value.length > 1 ? 4 : 1, spellcheck: "false", class: "mono" });
    input.value = JSON.stringify(value, null, Array.isArray(value) && value.some((v) => typeof v === "object") ? 2 : 0);
  } else if (secret) {
    kind = "secret";
    input = el("input", { type: "password", id, placeholder: "redacted by the server; type to replace", autocomplete: "off" });
  } else if (/[\r\n]/.test(value)) {
    // A one-line input drops line breaks: the value shown was another, and sent back by Save
    // with any other change. A box keeps them (a \r\n reads as \n: `shown`, below).
    kind = "string";
    input = el("textarea", { id, rows: Math.min(8, value.split("\n").length), spellcheck: "false" });
    input.value = value;
  } else {
    kind = "string";
    input = el("input", { type: "text", id, value: String(value), spellcheck: "false" });
  }
  input.setAttribute("aria-describedby", errorId);
  input.dataset.path = path;
  const error = el("span", { class: "field-error", id: errorId, role: "alert", hidden: true });
  // `shown`: a text as the field first held it, which is what a field left alone still holds
  // (a textarea's value reads \r\n as \n): left alone, it is not a change.
  fields.push({ path, keys, kind, original: value, shown: kind === "string" ? input.value : undefined, input, error });
  return el(
    "div",
    { class: `field field-${kind}`, dataset: { path } },
    el("label", { for: id, text: shownName(key) }),
    input,
    secret ? el("span", { class: "badge", text: "redacted" }) : null,
    error,
  );
}

// field -> new value (undefined: left alone); throws {field, message} on unparsable input.
function changes(strict = false) {
  const changed = new Map();
  for (const f of fields) {
    let value;
    if (f.kind === "boolean") value = f.input.checked;
    else if (f.kind === "number") {
      // Text the browser cannot read as a number (`1e`, `5-`) has the value "", which would
      // go out as null: the key deleted.
      if (f.input.validity.badInput) {
        if (strict) throw { field: f, message: "not a number" };
        changed.set(f, undefined);
        continue;
      }
      value = f.input.value === "" ? null : Number(f.input.value);
    } else if (f.kind === "secret") {
      if (!f.input.value) continue;
      value = f.input.value;
    } else if (f.kind === "json") {
      try {
        value = JSON.parse(f.input.value || "null");
      } catch {
        if (strict) throw { field: f, message: "not valid JSON" };
        changed.set(f, undefined);
        continue;
      }
    } else {
      if (f.input.value === f.shown) continue;
      value = f.input.value;
    }
    if (JSON.stringify(value) !== JSON.stringify(f.original)) changed.set(f, value);
  }
  return changed;
}

// The focus where Save's disabling dropped it (or still on Save), not put in a field since by
// a user typing on while a slow gateway answered.
function focusLost() {
  const now = document.activeElement;
  return now === null || now === document.body || now === $("config-save");
}

// What the field holds as typed.
function typed(f) {
  return f.kind === "boolean" ? f.input.checked : f.input.value;
}

// Objects without a prototype: a key named `__proto__` is a name like any other.
function patchOf(changed) {
  const patch = Object.create(null);
  for (const [{ keys }, value] of changed) {
    let node = patch;
    for (const key of keys.slice(0, -1)) node = node[key] ??= Object.create(null);
    node[keys[keys.length - 1]] = value;
  }
  return patch;
}

function clearErrors() {
  for (const f of fields) {
    f.error.hidden = true;
    f.error.textContent = "";
    f.input.removeAttribute("aria-invalid");
  }
}

function showFieldError(f, message) {
  f.error.textContent = message;
  f.error.hidden = false;
  f.input.setAttribute("aria-invalid", "true");
}

// The field an issue is about: the longest field path that is the issue's path or its prefix
// (an issue inside a list, `agents.list[0].id`, lands on the list's field).
function fieldFor(path) {
  let best = null;
  for (const f of fields) {
    if (path === f.path || path.startsWith(`${f.path}.`) || path.startsWith(`${f.path}[`)) {
      if (!best || f.path.length > best.path.length) best = f;
    }
  }
  return best;
}

async function save() {
  if (saving) return;
  clearErrors();
  setAlert($("config-message"), "");
  let changed;
  try {
    changed = changes(true);
  } catch (problem) {
    showFieldError(problem.field, problem.message);
    problem.field.input.focus();
    return;
  }
  if (!changed.size) return;
  // Disabled with the focus on it, Save drops the focus to the start of the page: it lands on
  // the outcome, unless a field in error took it.
  const fromSave = document.activeElement === $("config-save");
  $("config-save").disabled = true;
  const sent = new Map(fields.map((f) => [f, typed(f)]));
  saving = true;
  try {
    const result = await ctx.gw.request("config.patch", { raw: JSON.stringify(patchOf(changed)), baseHash: loaded.hash || undefined });
    // Typed while the gateway answered (a slow one): not in the patch, and kept in the form
    // built again from the saved config, as edits typed while it loads are.
    const meanwhile = fields.filter((f) => typed(f) !== sent.get(f)).map((f) => [f.path, typed(f)]);
    await load();
    for (const [path, value] of meanwhile) {
      const f = fields.find((g) => g.path === path);
      if (!f) continue;
      if (f.kind === "boolean") f.input.checked = value;
      else f.input.value = value;
    }
    $("config-save").disabled = !changes().size;
    const notes = [];
    if (result.restart.required) notes.push(`restart required for ${result.restart.paths.join(", ")}`);
    if (result.warnings.length) notes.push(...result.warnings.map(shownText));
    setAlert($("config-message"), `Saved.${notes.length ? ` ${notes.join("; ")}` : ""}`);
    $("config-message").dataset.kind = "ok";
    if (fromSave && focusLost()) $("config-message").focus();
  } catch (error) {
    $("config-message").dataset.kind = "error";
    const issues = (error.details && error.details.issues) || [];
    // Issues no field has, in the message: a path names keys as the file or the patch spelled
    // them, whose bidi controls would reorder the words after them (shown as code points); a
    // message quotes the value it refuses as written, and its bidi controls are shown so too.
    const unplaced = [];
    let first = null;
    for (const issue of issues) {
      const f = fieldFor(issue.path);
      if (f) {
        showFieldError(f, shownText(issue.message));
        first ??= f;
      } else unplaced.push(`${shownName(issue.path)}: ${shownText(issue.message)}`);
    }
    setAlert($("config-message"), [issues.length ? "The gateway refused the change." : error.message, ...unplaced].join("\n"));
    if (first) first.input.focus();
    else if (fromSave && focusLost()) $("config-message").focus();
    $("config-save").disabled = false;
  } finally {
    saving = false;
  }
}
