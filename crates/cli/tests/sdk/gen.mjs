// Turns the bodies `meethook trigger --emit-dir` wrote into TypeScript that assigns each v2 body
// to the official SDK's webhook type, for `tsc --strict --noEmit` (run by scripts/test-sdk-types).
// Usage: node gen.mjs BODIES_DIR OUT_DIR
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const [bodies, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });

const pascal = (s) => s.split("_").map((w) => w[0].toUpperCase() + w.slice(1)).join("");
// The SDK type of a body; null when SDK 6.0.5 has none (those are held against the field lists
// in a Rust test instead: crates/cli/src/cmd/trigger, v2_bodies_match_the_field_lists_of_later_sdks).
function sdkType(body) {
  const e = body.event;
  if (e === "bot.status_change") {
    // `retrying` (SDK 6.2.1) adds attempt/max to the status; everything else is 6.0.5's type.
    return body.data?.status?.code === "retrying"
      ? "V2.BotWebhookStatusChange & { data: { status: { attempt: number; max: number } } }"
      : "V2.BotWebhookStatusChange";
  }
  if (e === "bot.completed") return "V2.BotWebhookCompleted";
  if (e === "bot.failed") return "V2.BotWebhookFailed";
  if (e === "bot.chat_message") return null;
  if (e.startsWith("calendar.")) return `V2.CalendarWebhook${pascal(e.slice("calendar.".length))}`;
  throw new Error(`no SDK type known for event ${e}: add it to gen.mjs`);
}

const lines = ['import type { V2 } from "@meeting-baas/sdk";', ""];
let checked = 0;
const later = [];
for (const f of readdirSync(bodies).filter((f) => f.startsWith("v2-") && f.endsWith(".json")).sort()) {
  const text = readFileSync(join(bodies, f), "utf8");
  const body = JSON.parse(text);
  const type = sdkType(body);
  if (type === null) {
    later.push(`${f} (${body.event})`);
    continue;
  }
  const id = f.replace(/\.json$/, "").replace(/[^A-Za-z0-9]/g, "_");
  // The body's own text as an object literal: excess-property checks apply.
  lines.push(`export const ${id}: ${type} = ${text};`);
  checked++;
}
writeFileSync(join(out, "bodies.ts"), lines.join("\n") + "\n");
console.log(`${checked} v2 bodies typed against @meeting-baas/sdk; later than SDK 6.0.5, left to the Rust field-list test: ${later.join(", ") || "none"}`);
