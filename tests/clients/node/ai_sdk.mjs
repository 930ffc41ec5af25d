// The Vercel AI SDK (`ai` + `@ai-sdk/openai`, which uses the Responses API by default).
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";
import { apiKey, baseURL, main } from "./common.mjs";

const openai = createOpenAI({ baseURL, apiKey });
// A reasoning-model slug: the SDK sends the system prompt as a `developer` message.
const model = openai("gpt-5");
const toolCalls = [];
const tools = {
  get_weather: tool({
    description: "Current weather for a city",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      toolCalls.push(city);
      return { city, temp_c: 21 };
    },
  }),
};

function summary(result) {
  return {
    text: result.text,
    reasoning: result.reasoningText ?? null,
    finishReason: result.finishReason,
    responseId: result.providerMetadata?.openai?.responseId ?? null,
    usage: result.usage,
    steps: result.steps?.length ?? null,
    toolCalls,
  };
}

await main({
  async text() {
    const first = await generateText({ model, system: "Be brief.", prompt: "Say hello", maxRetries: 0 });
    // A second turn from the first one's messages: with the default store the SDK refers to the
    // earlier output by item_reference, without previous_response_id.
    const second = await generateText({
      model, system: "Be brief.", maxRetries: 0,
      messages: [{ role: "user", content: "Say hello" }, ...first.response.messages,
                 { role: "user", content: "Again" }],
    });
    return { first: summary(first), second: summary(second) };
  },

  async stream() {
    const result = streamText({ model, prompt: "Count", includeRawChunks: true, maxRetries: 0 });
    const raw = [];
    const deltas = [];
    for await (const part of result.fullStream) {
      if (part.type === "raw") raw.push(part.rawValue);
      if (part.type === "text-delta") deltas.push(part.text);
      if (part.type === "error") throw part.error;
    }
    return { deltas, text: await result.text, finishReason: await result.finishReason, raw };
  },

  async tools() {
    const result = await generateText({
      model, system: "Use tools.", prompt: "Weather in Paris?", tools, stopWhen: stepCountIs(3), maxRetries: 0,
    });
    return summary(result);
  },

  async stream_tools() {
    const result = streamText({
      model, prompt: "Weather in Paris?", tools, stopWhen: stepCountIs(3), maxRetries: 0, includeRawChunks: true,
    });
    const raw = [];
    for await (const part of result.fullStream) {
      if (part.type === "raw") raw.push(part.rawValue);
      if (part.type === "error") throw part.error;
    }
    return { text: await result.text, steps: (await result.steps).length, toolCalls, raw };
  },

  async tools_stateless() {
    const result = await generateText({
      model, prompt: "Weather in Paris?", tools, stopWhen: stepCountIs(3), maxRetries: 0,
      providerOptions: { openai: { store: false, include: ["reasoning.encrypted_content"] } },
    });
    return summary(result);
  },

  async conversation() {
    // The AI SDK does not create conversations: the application does, through the API.
    const created = await fetch(`${baseURL}/conversations`, {
      method: "POST", headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" }, body: "{}",
    });
    const { id } = await created.json();
    const providerOptions = { openai: { conversation: id } };
    const first = await generateText({ model, prompt: "My name is Ada.", maxRetries: 0, providerOptions });
    const second = streamText({ model, prompt: "What is my name?", maxRetries: 0, providerOptions });
    return { conversation: id, first: summary(first), second: await second.text };
  },
});
