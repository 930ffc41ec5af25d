// Shared by the client scripts: where the server is, and how results go back to the test.
export const baseURL = process.env.RESPONSA_BASE_URL;
export const apiKey = process.env.RESPONSA_API_KEY;
export const scenario = process.argv[2];

if (!baseURL || !apiKey || !scenario) {
  console.error("usage: RESPONSA_BASE_URL=... RESPONSA_API_KEY=... node <script> <scenario>");
  process.exit(2);
}

// The test reads the last stdout line as JSON.
export function report(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

export async function main(scenarios) {
  const run = scenarios[scenario];
  if (!run) {
    console.error(`unknown scenario ${scenario}; known: ${Object.keys(scenarios).join(", ")}`);
    process.exit(2);
  }
  try {
    report(await run());
  } catch (err) {
    console.error(err?.stack ?? err);
    if (err?.responseBody) console.error("response body:", err.responseBody);
    process.exit(1);
  }
}
