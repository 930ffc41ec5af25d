// The official `openai` npm package against Responsa: plain, streamed, tools, retrieve.
import OpenAI from "openai";
import { apiKey, baseURL, main } from "./common.mjs";

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const weather = {
  type: "function",
  name: "get_weather",
  description: "Current weather for a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
    additionalProperties: false,
  },
  strict: true,
};

await main({
  async text() {
    const r = await client.responses.create({ model: "gpt-4.1", input: "Say hello" });
    return { id: r.id, output_text: r.output_text, status: r.status };
  },

  async stream() {
    const raw = await client.responses.create({ model: "gpt-4.1", input: "Count", stream: true });
    const events = [];
    for await (const ev of raw) events.push(ev);
    const helper = client.responses.stream({ model: "gpt-4.1", input: "Count again" });
    const deltas = [];
    helper.on("response.output_text.delta", (ev) => deltas.push(ev.delta));
    const final = await helper.finalResponse();
    return { events, helper_text: deltas.join(""), helper_final: final.output_text, helper_id: final.id };
  },

  async tools() {
    // A function-call round trip, once chained by previous_response_id and once by full history.
    const first = await client.responses.create({ model: "gpt-4.1", input: "Weather in Paris?", tools: [weather] });
    const call = first.output.find((item) => item.type === "function_call");
    const output = { type: "function_call_output", call_id: call.call_id, output: JSON.stringify({ temp_c: 21 }) };
    const chained = await client.responses.create({
      model: "gpt-4.1", previous_response_id: first.id, input: [output], tools: [weather],
    });
    const history = [{ role: "user", content: "Weather in Paris?" }, ...first.output, output];
    const stateless = await client.responses.create({
      model: "gpt-4.1", input: history, tools: [weather], store: false,
    });
    return {
      call: { name: call.name, arguments: JSON.parse(call.arguments), call_id: call.call_id },
      chained: chained.output_text,
      stateless: stateless.output_text,
    };
  },

  async retrieve() {
    const created = await client.responses.create({ model: "gpt-4.1", input: "Keep this" });
    const got = await client.responses.retrieve(created.id, {
      include: ["reasoning.encrypted_content", "message.output_text.logprobs"],
    });
    return { id: got.id, output_text: got.output_text, same: got.id === created.id };
  },
});
