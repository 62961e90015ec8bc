// The official TypeScript SDK's client (the library Roo Code uses) against the gateway's /mcp.
// node tests/mcp_servers/ts_sdk_client.cjs URL KEY  (NODE_PATH: a node_modules holding @modelcontextprotocol/sdk)
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

async function main(url, key) {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  const client = new Client({ name: "ts-sdk-test", version: "1.0" });
  await client.connect(transport);
  const out = { protocol: transport.protocolVersion, session: Boolean(transport.sessionId) };
  out.tools = (await client.listTools()).tools.map((t) => t.name);
  out.result = await client.callTool({ name: "local-echo", arguments: { text: "from node" } });
  try {
    await client.callTool({ name: "remote-add", arguments: { a: 1, b: 2 } });
  } catch (e) {
    out.refused = { code: e.code, message: e.message };
  }
  await transport.terminateSession();
  await client.close();
  console.log(JSON.stringify(out));
}

main(process.argv[2], process.argv[3]).catch((e) => {
  console.error(e);
  process.exit(1);
});
