// A @chainsafe/discv5 node on loopback for the interop test. Copied next to its
// node_modules by the test. Usage: node discv5-peer.mjs PORT
// Prints "ENR <text>" once listening; then reads commands from stdin:
//   "ADD <enr text>"  add a record and run a random lookup; prints "FOUND <ids>" and
//                     "KAD <ids>" (node ids, hex, comma separated)
//   "PING <enr text>" ping that node; prints "PONG <enr-seq>" or "PINGERR <message>"
import { createInterface } from "node:readline";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { ENR, SignableENR } from "@chainsafe/enr";
import { Discv5 } from "@chainsafe/discv5";
import { multiaddr } from "@multiformats/multiaddr";

const port = Number(process.argv[2]);
const key = await generateKeyPair("secp256k1");
const enr = SignableENR.createFromPrivateKey(key);
enr.ip = "127.0.0.1";
enr.udp = port;
const d = Discv5.create({
  enr,
  privateKey: key,
  bindAddrs: { ip4: multiaddr(`/ip4/127.0.0.1/udp/${port}`) },
});
d.on("talkReqReceived", (addr, _enr, msg) => {
  d.sendTalkResp(addr, msg.id, new TextEncoder().encode("pong")).catch(() => {});
});
await d.start();
console.log("ENR " + enr.encodeTxt());

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const [cmd, arg] = line.trim().split(" ");
  try {
    if (cmd === "ADD") {
      d.addEnr(arg);
      const found = await d.findRandomNode();
      console.log("FOUND " + found.map((e) => e.nodeId).join(","));
      console.log("KAD " + d.kadValues().map((e) => e.nodeId).join(","));
    } else if (cmd === "PING") {
      const pong = await d.sendPing(ENR.decodeTxt(arg));
      console.log("PONG " + pong.enrSeq);
    } else if (cmd === "QUIT") {
      break;
    }
  } catch (e) {
    console.log("ERR " + cmd + " " + String(e && e.message ? e.message : e).replace(/\n/g, " "));
  }
}
await d.stop();
process.exit(0);
