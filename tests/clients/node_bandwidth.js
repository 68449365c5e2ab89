// Drives sipconf with the published Catapult v1 client node-bandwidth 4.0.0,
// changing only its base URL: create a conference, read it, add two answered
// calls as members, list and read them, mute, hold, remove one, and complete
// the conference. Run by tests/api_clients.rs; exits non-zero on any mismatch.
//
// usage: node node_bandwidth.js BASE_URL USER_ID TOKEN SECRET CALL_ID_1 CALL_ID_2
"use strict";
const assert = require("assert");
const Bandwidth = require("node-bandwidth");

const [baseUrl, userId, apiToken, apiSecret, first, second] = process.argv.slice(2);
const client = new Bandwidth({ userId, apiToken, apiSecret, baseUrl });

async function main() {
	const call = await client.Call.get(first);
	assert.strictEqual(call.state, "active");

	const conference = await client.Conference.create({ from: "+15550001", tag: "node" });
	assert.ok(conference.id.startsWith("conf-"), conference.id);
	let c = await client.Conference.get(conference.id);
	assert.strictEqual(c.state, "created");
	assert.strictEqual(c.tag, "node");

	const a = await client.Conference.createMember(conference.id, { callId: first, joinTone: false });
	const b = await client.Conference.createMember(conference.id, { callId: second, mute: true });
	assert.ok(a.id.startsWith("member-"), a.id);
	const members = await client.Conference.getMembers(conference.id);
	assert.deepStrictEqual(members.map((m) => m.id), [a.id, b.id]);
	let m = await client.Conference.getMember(conference.id, b.id);
	assert.strictEqual(m.mute, true);

	await client.Conference.updateMember(conference.id, a.id, { mute: true });
	await client.Conference.updateMember(conference.id, a.id, { hold: true });
	m = await client.Conference.getMember(conference.id, a.id);
	assert.strictEqual(m.mute, true);
	assert.strictEqual(m.hold, true);

	await client.Conference.update(conference.id, { mute: true, hold: false });
	c = await client.Conference.get(conference.id);
	assert.strictEqual(c.state, "active");
	assert.strictEqual(c.mute, true);
	assert.strictEqual(c.activeMembers, 2);

	await client.Conference.removeMember(conference.id, a.id);
	m = await client.Conference.getMember(conference.id, a.id);
	assert.strictEqual(m.state, "completed");

	await client.Conference.remove(conference.id);
	c = await client.Conference.get(conference.id);
	assert.strictEqual(c.state, "completed");
	assert.strictEqual(c.activeMembers, 0);

	let refused = null;
	try {
		await client.Conference.update(conference.id, { mute: false });
	} catch (e) {
		refused = e;
	}
	assert.ok(refused, "a completed conference refuses changes");
	assert.strictEqual(refused.statusCode, 403);
	console.log("node-bandwidth 4.0.0: every step passed");
}

main().catch((e) => {
	console.error(e);
	process.exit(1);
});
