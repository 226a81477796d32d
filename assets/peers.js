// WebRTC plumbing shared by both modes: one RTCPeerConnection per remote id (a viewer in the
// relay tree holds its feeder's and its children's), ICE candidates relayed through the server
// and queued until the remote description is set.

import { currentIceServers } from "./ice.js";
import { peers } from "./state.js";
import { emit } from "./signaling.js";

/**
 * Remote id → ICE candidates received before that peer's remote description was set.
 * An entry exists exactly while candidates must wait; afterwards they are added directly.
 */
const pendingCandidates = new Map();

export function createPeer(remoteId, onStateChange) {
  // The servers of the moment: TURN credentials expire, so each connection takes the
  // freshest (ice.js); `[]` means host candidates only.
  const pc = new RTCPeerConnection({ iceServers: currentIceServers() });
  peers.set(remoteId, pc);
  pendingCandidates.set(remoteId, []);
  pc.onicecandidate = ({ candidate }) => {
    // Skip end-of-candidates (null or empty): the protocol relays candidate objects only.
    if (!candidate || !candidate.candidate || peers.get(remoteId) !== pc) return;
    emit("ice_candidate", { target: remoteId, candidate: candidate.toJSON() });
  };
  pc.onconnectionstatechange = () => {
    if (peers.get(remoteId) === pc) onStateChange(remoteId, pc);
  };
  return pc;
}

export function closePeer(remoteId) {
  const pc = forgetPeer(remoteId);
  if (pc) pc.close();
}

/**
 * Stops signaling with `remoteId` (its candidates are dropped, ours no longer sent) but leaves
 * its connection open for the caller, which closes it later; returns that connection.
 */
export function forgetPeer(remoteId) {
  const pc = peers.get(remoteId);
  peers.delete(remoteId);
  pendingCandidates.delete(remoteId);
  return pc;
}

export function closeAllPeers() {
  for (const remoteId of [...peers.keys()]) closePeer(remoteId);
}

/** The session description as the plain `{type, sdp}` object the protocol relays. */
export function plainDescription(description) {
  return { type: description.type, sdp: description.sdp };
}

/**
 * Applies our own offer or answer and sends it as `event` to `remoteId` at once, rather than
 * after it is applied: it is final when created, and a connection runs its operations in
 * order, so the reply cannot overtake it. That saves a trip through the browser's WebRTC
 * thread on each side of every (re)connection, which counts on a busy machine when a viewer
 * is moved. Resolves false when the connection was replaced meanwhile.
 */
export async function sendDescription(event, remoteId, pc, description) {
  if (peers.get(remoteId) !== pc) return false;
  const applied = pc.setLocalDescription(description);
  emit(event, { target: remoteId, sdp: plainDescription(description) });
  await applied;
  return true;
}

/** Sets the remote description, then adds the candidates that had to wait for it. */
export async function applyRemoteDescription(remoteId, pc, description) {
  await pc.setRemoteDescription(description);
  if (peers.get(remoteId) !== pc) return false;
  const queued = pendingCandidates.get(remoteId) || [];
  pendingCandidates.delete(remoteId);
  for (const candidate of queued) await addCandidate(pc, candidate);
  return peers.get(remoteId) === pc;
}

export function onIceCandidate(payload) {
  if (!payload || typeof payload.sender !== "string" || !payload.candidate) return;
  const { sender, candidate } = payload;
  const queue = pendingCandidates.get(sender);
  if (queue) {
    queue.push(candidate);
    return;
  }
  const pc = peers.get(sender);
  if (pc) addCandidate(pc, candidate);
}

async function addCandidate(pc, candidate) {
  try {
    await pc.addIceCandidate(candidate);
  } catch (err) {
    // One bad candidate should not end the session; others usually work.
    console.warn("Ignoring an ICE candidate the browser rejected", err);
  }
}
