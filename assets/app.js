// The served page: one broadcaster streams camera and microphone peer-to-peer to many viewers,
// with a chat for everyone in the channel. The server only relays signaling (see PROTOCOL.md);
// media never passes through it.
//
// The mode comes from the query string: ?broadcaster=true[&channel=ID], ?viewer=true[&channel=ID],
// or neither (landing view). Element ids and the `data-state` values of #status are a contract
// with the end-to-end tests; keep them stable.
//
// Plain ES2020, no build step. User-supplied text is only ever inserted with textContent.
"use strict";

(() => {
  // ---------------------------------------------------------------------------------------------
  // Constants
  // ---------------------------------------------------------------------------------------------

  /** The server's chat limit, counted in Unicode characters like the server does. */
  const CHAT_MAX_CHARS = 200;
  /** Older chat lines are dropped past this, so a long session does not grow without bound. */
  const CHAT_LOG_LIMIT = 500;
  /** How often the viewer's channel list is fetched again while the page is visible. */
  const CHANNEL_LIST_REFRESH_MS = 10000;
  /** How often the displayed channel ages tick between fetches. */
  const AGE_TICK_MS = 1000;
  /** Failed reconnect attempts after which "reconnecting" becomes "unreachable". */
  const UNREACHABLE_AFTER_ATTEMPTS = 3;
  /**
   * After our own reconnect, the server may still hold our old socket's channel until it notices
   * that socket is gone (ping interval 25 s + timeout 20 s), so "already has a broadcaster" is
   * retried for a little longer than that.
   */
  const REJOIN_RETRY_MS = 3000;
  const REJOIN_RETRY_LIMIT = 20;
  /**
   * A viewer whose broadcaster dropped keeps asking for the channel for a while, so it comes
   * back by itself when the broadcaster reconnects (their channel is recreated under the same id).
   */
  const LEFT_POLL_MS = 5000;
  /**
   * The first asks come sooner (doubling up to LEFT_POLL_MS): a broadcaster who reloads its
   * page, or a restarted server, is usually back within a second or two.
   */
  const LEFT_POLL_FIRST_MS = 1000;
  const LEFT_POLL_LIMIT = 60;
  /** Delay before a viewer asks for a fresh negotiation after its peer connection failed. */
  const PEER_RETRY_BASE_MS = 2000;
  const PEER_RETRY_MAX_MS = 30000;
  const NOTICE_MS = 6000;

  // ---------------------------------------------------------------------------------------------
  // Page-wide state
  // ---------------------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const mode = readMode(params);
  const iceServers = readIceServers();

  /** Remote socket id → RTCPeerConnection (broadcaster: one per viewer; viewer: the broadcaster). */
  const peers = new Map();
  /**
   * Remote socket id → ICE candidates received before that peer's remote description was set.
   * An entry exists exactly while candidates must wait; afterwards they are added directly.
   */
  const pendingCandidates = new Map();

  const app = {
    mode,
    socket: null,
    peers,
    /** Our socket id as the server announced it in `client_id`. */
    myId: null,
    everConnected: false,
    /** "connecting" | "connected" | "reconnecting" | "unreachable" */
    connection: "connecting",
    reconnectAttempts: 0,
    /** What the page is doing regardless of the socket: the `data-state` shown while connected. */
    phase: { state: "idle", text: "" },
    /** The channel this page broadcasts or watches. */
    channelId: null,
    /**
     * The request whose failure an `error` event most likely reports. The protocol's `error`
     * carries no request id, so unprefixed errors are routed by what we asked last.
     */
    lastRequest: null,
  };

  // Debug handle for tests and the console (the contract promises `socket` and `peers`).
  window.broadcastApp = app;

  const ui = {
    status: $("status"),
    notice: $("notice"),
    layout: $("layout"),
    modeBroadcaster: $("mode-broadcaster"),
    modeViewer: $("mode-viewer"),
    chatPanel: $("chat-panel"),
    chatLog: $("chat-log"),
    chatError: $("chat-error"),
    chatForm: $("chat-form"),
    chatInput: $("chat-input"),
    chatSend: $("chat-send"),
    chatCount: $("chat-count"),
  };

  // ---------------------------------------------------------------------------------------------
  // Start-up
  // ---------------------------------------------------------------------------------------------

  function readMode(query) {
    if (isFlagSet(query, "broadcaster")) return "broadcaster";
    if (isFlagSet(query, "viewer")) return "viewer";
    return "landing";
  }

  function isFlagSet(query, name) {
    if (!query.has(name)) return false;
    return !["false", "0", "no"].includes(query.get(name).toLowerCase());
  }

  /** The server hands its ICE servers to the page as JSON; `[]` means host candidates only. */
  function readIceServers() {
    try {
      const parsed = JSON.parse($("config").textContent || "[]");
      if (Array.isArray(parsed)) return parsed;
      if (parsed && Array.isArray(parsed.iceServers)) return parsed.iceServers;
    } catch (err) {
      console.error("Unreadable ICE server config; using host candidates only", err);
    }
    return [];
  }

  function start() {
    markActiveMode();
    const controller = currentController();
    controller.init();
    initChat();
    if (typeof window.io !== "function") {
      setPhase("error", "The page's Socket.IO client failed to load; reload the page.");
      return;
    }
    connect(controller);
  }

  function markActiveMode() {
    const active = { broadcaster: ui.modeBroadcaster, viewer: ui.modeViewer }[mode];
    if (active) active.setAttribute("aria-current", "page");
    document.body.dataset.mode = mode;
  }

  // ---------------------------------------------------------------------------------------------
  // Status line: what the socket is doing takes precedence over what the page is doing
  // ---------------------------------------------------------------------------------------------

  const CONNECTION_TEXT = {
    connecting: "Connecting to the server…",
    reconnecting: "Connection to the server lost. Reconnecting…",
    unreachable: "Cannot reach the server. Still trying…",
  };

  /** Records what the page is doing and shows it unless a connection problem is more urgent. */
  function setPhase(state, text) {
    app.phase = { state, text };
    renderStatus();
  }

  function setConnection(connection) {
    app.connection = connection;
    renderStatus();
  }

  function renderStatus() {
    const connected = app.connection === "connected";
    // A page-level error (e.g. the client script failed to load) outranks "connecting".
    const showPhase = connected || app.phase.state === "error";
    const state = showPhase ? app.phase.state : app.connection;
    const text = showPhase ? app.phase.text : CONNECTION_TEXT[app.connection];
    ui.status.dataset.state = state;
    ui.status.textContent = text;
    document.body.dataset.state = state;
    currentController().render();
  }

  function currentController() {
    return { broadcaster: broadcasterMode, viewer: viewerMode, landing: landingMode }[mode];
  }

  /** A short message that does not replace the status line, e.g. a refused relay. */
  let noticeTimer = null;
  function showNotice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      ui.notice.hidden = true;
    }, NOTICE_MS);
  }

  // ---------------------------------------------------------------------------------------------
  // Socket.IO connection
  // ---------------------------------------------------------------------------------------------

  function connect(controller) {
    // Polling first, then upgrade: the same order legacy pages use, and it works through
    // proxies that block WebSocket.
    const socket = window.io({ transports: ["polling", "websocket"] });
    app.socket = socket;

    socket.on("connect", () => onConnect(controller));
    socket.on("disconnect", onDisconnect);
    socket.on("connect_error", onConnectError);
    socket.io.on("reconnect_attempt", (attempt) => {
      app.reconnectAttempts = attempt;
    });

    socket.on("client_id", (payload) => {
      app.myId = payload && typeof payload.id === "string" ? payload.id : socket.id;
      controller.onClientId();
    });
    socket.on("error", (payload) => routeError(controller, messageOf(payload)));
    socket.on("relay_error", onRelayError);
    socket.on("ice_candidate", onIceCandidate);
    socket.on("new_message", onNewMessage);
    controller.bindSocket(socket);
  }

  function onConnect(controller) {
    const isReconnect = app.everConnected;
    app.everConnected = true;
    app.reconnectAttempts = 0;
    // `client_id` follows shortly with the same value the client already knows as `socket.id`.
    app.myId = app.socket.id;
    setConnection("connected");
    controller.onConnect(isReconnect);
  }

  function onDisconnect(reason) {
    if (reason === "io client disconnect") return;
    if (reason === "io server disconnect") {
      // The server closed us on purpose; Socket.IO does not retry that by itself.
      app.socket.connect();
    }
    // Peer connections stay up: media flows peer-to-peer and may survive a signaling blip.
    setConnection("reconnecting");
  }

  function onConnectError(err) {
    console.warn("Socket.IO connection failed:", err && err.message);
    const gaveUp = !app.everConnected || app.reconnectAttempts >= UNREACHABLE_AFTER_ATTEMPTS;
    setConnection(gaveUp ? "unreachable" : "reconnecting");
  }

  /** Emits a request whose failure would come back as an `error` event. */
  function request(kind, event, payload) {
    app.lastRequest = kind;
    app.socket.emit(event, payload);
  }

  function messageOf(payload) {
    if (payload && typeof payload.message === "string") return payload.message;
    return typeof payload === "string" ? payload : "Unknown error from the server";
  }

  /**
   * Routes a server `error` to the part of the screen it concerns. The prefixes are part of the
   * protocol; errors without one are attributed to the last request we made.
   */
  function routeError(controller, message) {
    console.warn("Server error:", message);
    if (message.startsWith("Invalid message:")) return showChatError(message);
    if (message.startsWith("Invalid alias:")) return showAliasError(message);
    if (app.lastRequest === "chat") return onChatRefused(message);
    if (app.lastRequest === "alias") return showAliasError(message);
    return controller.onError(message, app.lastRequest);
  }

  function onRelayError(payload) {
    // The server refused to pass on our offer/answer/candidate; the peer is usually gone.
    console.warn("relay_error", payload);
    const event = payload && typeof payload.event === "string" ? payload.event : "signal";
    showNotice(`Could not deliver ${event}: ${messageOf(payload)}`);
  }

  // ---------------------------------------------------------------------------------------------
  // WebRTC helpers shared by both modes
  // ---------------------------------------------------------------------------------------------

  function createPeer(remoteId, onStateChange) {
    const pc = new RTCPeerConnection({ iceServers });
    peers.set(remoteId, pc);
    pendingCandidates.set(remoteId, []);
    pc.onicecandidate = ({ candidate }) => {
      // Skip end-of-candidates (null or empty): the protocol relays candidate objects only.
      if (!candidate || !candidate.candidate || peers.get(remoteId) !== pc) return;
      app.socket.emit("ice_candidate", { target: remoteId, candidate: candidate.toJSON() });
    };
    pc.onconnectionstatechange = () => {
      if (peers.get(remoteId) === pc) onStateChange(remoteId, pc);
    };
    return pc;
  }

  function closePeer(remoteId) {
    const pc = peers.get(remoteId);
    peers.delete(remoteId);
    pendingCandidates.delete(remoteId);
    if (pc) pc.close();
  }

  function closeAllPeers() {
    for (const remoteId of [...peers.keys()]) closePeer(remoteId);
  }

  /** The session description as the plain `{type, sdp}` object the protocol relays. */
  function plainDescription(description) {
    return { type: description.type, sdp: description.sdp };
  }

  /** Sets the remote description, then adds the candidates that had to wait for it. */
  async function applyRemoteDescription(remoteId, pc, description) {
    await pc.setRemoteDescription(description);
    if (peers.get(remoteId) !== pc) return false;
    const queued = pendingCandidates.get(remoteId) || [];
    pendingCandidates.delete(remoteId);
    for (const candidate of queued) await addCandidate(pc, candidate);
    return peers.get(remoteId) === pc;
  }

  function onIceCandidate(payload) {
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

  // ---------------------------------------------------------------------------------------------
  // Chat (both modes; the broadcaster sees everything its viewers write)
  // ---------------------------------------------------------------------------------------------

  const chat = {
    /** Last text sent, restored into the input if the server rejects it. */
    lastSent: "",
    /** Only viewers may write (PROTOCOL.md): the broadcaster reads its viewers' chat. */
    readOnly: false,
  };

  function initChat() {
    ui.chatForm.addEventListener("submit", (event) => {
      event.preventDefault();
      sendChat();
    });
    ui.chatInput.addEventListener("input", updateChatCount);
    if (mode === "broadcaster") {
      // Say so up front rather than after a refused message.
      chat.readOnly = true;
      ui.chatInput.placeholder = "Only viewers can write here";
      setChatEnabled(false);
    }
    updateChatCount();
  }

  function showChat(visible) {
    ui.chatPanel.hidden = !visible;
    ui.layout.classList.toggle("with-chat", visible);
  }

  function setChatEnabled(enabled) {
    ui.chatInput.disabled = !enabled || chat.readOnly;
    ui.chatSend.disabled = !enabled || chat.readOnly;
  }

  function charCount(text) {
    // The server counts Unicode characters (code points), not UTF-16 units.
    return [...text].length;
  }

  function updateChatCount() {
    const count = charCount(ui.chatInput.value.trim());
    ui.chatCount.textContent = `${count}/${CHAT_MAX_CHARS}`;
    ui.chatCount.classList.toggle("over", count > CHAT_MAX_CHARS);
  }

  function sendChat() {
    // Trim like legacy pages; the server trims too. An empty message is simply not sent.
    const message = ui.chatInput.value.trim();
    if (!message || !app.channelId || !app.socket.connected) return;
    showChatError("");
    chat.lastSent = message;
    request("chat", "send_message", { channel_id: app.channelId, message });
    ui.chatInput.value = "";
    updateChatCount();
  }

  function onChatRefused(message) {
    showChatError(message);
    if (mode === "broadcaster" && /must be a viewer/.test(message)) {
      // This server lets only viewers write; keep the chat readable and say so.
      chat.readOnly = true;
      ui.chatInput.value = "";
      ui.chatInput.placeholder = "Only viewers can write here";
      setChatEnabled(false);
      updateChatCount();
    }
  }

  function showChatError(text) {
    ui.chatError.textContent = text;
    if (text && !ui.chatInput.value && chat.lastSent) {
      // Give the rejected text back so the user can fix it rather than retype it.
      ui.chatInput.value = chat.lastSent;
      updateChatCount();
    }
  }

  function onNewMessage(payload) {
    if (!payload || typeof payload.message !== "string") return;
    const sender = typeof payload.sender_id === "string" ? payload.sender_id : "Someone";
    const isOwn = sender === myChatName();
    // Our message came back: whatever went wrong before is over.
    if (isOwn) ui.chatError.textContent = "";
    appendChatMessage(sender, payload.message, payload.timestamp, isOwn);
  }

  /** The name the server attaches to our messages: our alias, or "Viewer-" + 8 chars of our id. */
  function myChatName() {
    if (mode !== "viewer") return null;
    if (viewer.alias) return viewer.alias;
    return app.myId ? `Viewer-${[...app.myId].slice(0, 8).join("")}` : null;
  }

  function appendChatMessage(sender, text, timestamp, isOwn) {
    const log = ui.chatLog;
    // Follow new messages only if the reader was already at the bottom.
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;

    const item = document.createElement("li");
    item.className = isOwn ? "chat-msg own" : "chat-msg";
    const senderEl = document.createElement("span");
    senderEl.className = "chat-sender";
    senderEl.textContent = sender;
    const textEl = document.createElement("span");
    textEl.className = "chat-text";
    textEl.textContent = text;
    item.append(senderEl, textEl);
    const time = formatChatTime(timestamp);
    if (time) {
      const timeEl = document.createElement("time");
      timeEl.className = "chat-time";
      timeEl.dateTime = time.iso;
      timeEl.textContent = time.label;
      item.append(timeEl);
    }
    log.append(item);

    while (log.children.length > CHAT_LOG_LIMIT) log.firstElementChild.remove();
    if (atBottom || isOwn) log.scrollTop = log.scrollHeight;
  }

  function formatChatTime(timestamp) {
    if (typeof timestamp !== "number" || !Number.isFinite(timestamp)) return null;
    const date = new Date(timestamp * 1000);
    return {
      iso: date.toISOString(),
      label: date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Landing mode: no socket work beyond showing that the server is reachable
  // ---------------------------------------------------------------------------------------------

  const landingMode = {
    init() {
      $("landing-view").hidden = false;
      app.phase = { state: "idle", text: "Connected. Go live or watch a broadcast." };
    },
    bindSocket() {},
    onConnect() {
      setPhase("idle", "Connected. Go live or watch a broadcast.");
    },
    onClientId() {},
    onError(message) {
      setPhase("error", message);
    },
    render() {},
  };

  // ---------------------------------------------------------------------------------------------
  // Broadcaster mode
  // ---------------------------------------------------------------------------------------------

  const broadcaster = {
    localStream: null,
    /** True from Start until Stop/expiry/failure: offers are answered only while this holds. */
    wantLive: false,
    /** This page created its channel (so going live again uses `force: true`). */
    ownsChannel: false,
    /** The channel id asked for at Start (empty: let the server pick one). */
    requestedId: null,
    /** Retrying a join after our own reconnect; see REJOIN_RETRY_MS. */
    rejoinAttempts: 0,
    rejoinTimer: null,
    viewerCount: 0,
  };

  const bui = {};

  const broadcasterMode = {
    init() {
      Object.assign(bui, {
        view: $("broadcaster-view"),
        startForm: $("start-form"),
        channelInput: $("channel-id-input"),
        startBtn: $("start-btn"),
        stopBtn: $("stop-btn"),
        localVideo: $("local-video"),
        placeholder: $("local-placeholder"),
        onAir: $("on-air"),
        viewerLink: $("viewer-link"),
        copyBtn: $("copy-link-btn"),
        viewerCount: $("viewer-count"),
        viewerCountLabel: $("viewer-count-label"),
      });
      bui.view.hidden = false;
      bui.channelInput.value = (params.get("channel") || "").trim();
      ui.chatInput.placeholder = "Message your viewers…";
      bui.startForm.addEventListener("submit", (event) => {
        event.preventDefault();
        startBroadcast();
      });
      bui.stopBtn.addEventListener("click", stopBroadcast);
      bui.copyBtn.addEventListener("click", copyViewerLink);
      bui.viewerLink.addEventListener("focus", () => bui.viewerLink.select());
      app.phase = { state: "idle", text: "" };
    },

    bindSocket(socket) {
      socket.on("broadcaster_ready", onBroadcasterReady);
      socket.on("offer", onViewerOffer);
      socket.on("viewer_count", onViewerCount);
      socket.on("channel_expired", onChannelExpired);
    },

    onConnect(isReconnect) {
      if (!isReconnect) {
        setPhase("idle", "Ready. Press Start to go live.");
        return;
      }
      // Our old socket's channel and its peer connections are gone on the server side; viewers
      // were told the broadcaster left and come back when the channel reappears.
      closeAllPeers();
      broadcaster.ownsChannel = false;
      setViewerCount(0);
      if (broadcaster.wantLive) {
        // Live before (or still starting): same channel id, or the one asked for at Start.
        const channelId = app.channelId || broadcaster.requestedId;
        broadcaster.rejoinAttempts = 0;
        setPhase("starting", "Reconnected. Going live again…");
        joinAsBroadcaster(channelId, true);
      } else if (app.phase.state === "stopped") {
        setPhase("stopped", `Broadcast stopped. Press Start to go live again on channel ${app.channelId}.`);
      } else {
        renderStatus();
      }
    },

    onClientId() {},

    onError(message, lastRequest) {
      if (message.startsWith("Invalid data:") || lastRequest === "join") {
        onJoinRefused(message);
      } else {
        setPhase("error", message);
      }
    },

    render() {
      const connected = app.connection === "connected";
      const phase = app.phase.state;
      const canStart = connected && ["idle", "stopped", "expired", "error"].includes(phase);
      bui.startBtn.disabled = !canStart;
      bui.startBtn.textContent = broadcaster.ownsChannel && phase === "stopped" ? "Go live again" : "Start";
      bui.stopBtn.disabled = !(connected && phase === "live");
      // A channel this page owns keeps its id; pick another one by reloading the page.
      bui.channelInput.disabled = broadcaster.ownsChannel || phase === "starting" || phase === "live";
      bui.copyBtn.disabled = !bui.viewerLink.value;
      bui.onAir.hidden = phase !== "live";
      renderViewerCountLabel();
    },
  };

  async function startBroadcast() {
    if (!app.socket.connected) return;
    const requested = broadcaster.ownsChannel ? app.channelId : bui.channelInput.value.trim();
    setPhase("starting", "Starting camera and microphone…");
    try {
      await ensureLocalStream();
    } catch (err) {
      console.error("getUserMedia failed", err);
      setPhase("error", cameraErrorText(err));
      return;
    }
    broadcaster.wantLive = true;
    broadcaster.rejoinAttempts = 0;
    broadcaster.requestedId = requested || null;
    setPhase("starting", "Going live…");
    // `force` lets the owner of a stopped channel go live again under the same id.
    joinAsBroadcaster(broadcaster.requestedId, broadcaster.ownsChannel);
  }

  function joinAsBroadcaster(channelId, force) {
    clearTimeout(broadcaster.rejoinTimer);
    request("join", "join_as_broadcaster", { channel_id: channelId, force });
  }

  /** Reuses the camera across Stop/Start so the preview stays on. */
  async function ensureLocalStream() {
    if (broadcaster.localStream && broadcaster.localStream.active) return broadcaster.localStream;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("insecure-context");
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (err) {
      // No microphone (or it is busy) should not prevent a video-only broadcast.
      if (err && err.name === "NotAllowedError") throw err;
      stream = await navigator.mediaDevices.getUserMedia({ video: true });
    }
    broadcaster.localStream = stream;
    bui.localVideo.srcObject = stream;
    bui.placeholder.hidden = true;
    bui.localVideo.play().catch(() => {});
    return stream;
  }

  function cameraErrorText(err) {
    const name = err && err.name;
    if (err && err.message === "insecure-context") {
      return "The camera needs a secure page: open this site over HTTPS (or on localhost).";
    }
    if (name === "NotAllowedError") {
      return "Camera access was denied. Allow the camera for this site, then press Start again.";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "No camera found. Connect one and press Start again.";
    }
    if (name === "NotReadableError") {
      return "The camera is in use by another application. Close it and press Start again.";
    }
    return `Could not start the camera: ${(err && err.message) || name || "unknown error"}`;
  }

  function onBroadcasterReady(payload) {
    if (!payload || typeof payload.channel_id !== "string") return;
    const channelId = payload.channel_id;
    if (!broadcaster.wantLive) {
      // A late reply to a join we no longer want: keep the channel, but do not go live unasked.
      broadcaster.ownsChannel = true;
      app.channelId = channelId;
      request("stop", "stop_broadcast", { channel_id: channelId });
      return;
    }
    if (channelId !== app.channelId) setViewerCount(0);
    app.channelId = channelId;
    broadcaster.ownsChannel = true;
    broadcaster.rejoinAttempts = 0;
    bui.channelInput.value = channelId;
    bui.viewerLink.value = viewerUrl(channelId);
    // Reloading the page keeps the channel id.
    window.history.replaceState(null, "", `?broadcaster=true&channel=${encodeURIComponent(channelId)}`);
    showChat(true);
    setChatEnabled(true);
    setPhase("live", `Live on channel ${channelId}`);
  }

  function viewerUrl(channelId) {
    const url = new URL(window.location.pathname, window.location.origin);
    url.search = `?viewer=true&channel=${encodeURIComponent(channelId)}`;
    return url.href;
  }

  function onJoinRefused(message) {
    const channelId = app.channelId || broadcaster.requestedId;
    const retriable = /already has a broadcaster/.test(message) && isRejoin() &&
      broadcaster.wantLive && app.phase.state === "starting" &&
      broadcaster.rejoinAttempts < REJOIN_RETRY_LIMIT;
    if (retriable) {
      // Our previous connection still holds the channel until the server times it out.
      broadcaster.rejoinAttempts += 1;
      setPhase("starting", `Reconnected. Waiting for the server to release channel ${channelId}…`);
      broadcaster.rejoinTimer = setTimeout(() => joinAsBroadcaster(channelId, true), REJOIN_RETRY_MS);
      return;
    }
    broadcaster.wantLive = false;
    setPhase("error", message);
  }

  /** A join is a rejoin when it re-creates the channel this page was live on before. */
  function isRejoin() {
    return !broadcaster.ownsChannel && bui.viewerLink.value !== "";
  }

  async function onViewerOffer(payload) {
    if (!payload || typeof payload.sender !== "string" || !payload.sdp) return;
    if (!broadcaster.wantLive || !broadcaster.localStream) {
      console.info("Ignoring an offer while not live", payload.sender);
      return;
    }
    const viewerId = payload.sender;
    // A viewer offers again after any hiccup; the new offer replaces its old connection.
    closePeer(viewerId);
    const pc = createPeer(viewerId, onBroadcasterPeerState);
    try {
      if (!(await applyRemoteDescription(viewerId, pc, payload.sdp))) return;
      // Tracks are added after the offer so they reuse the viewer's recvonly transceivers.
      for (const track of broadcaster.localStream.getTracks()) {
        pc.addTrack(track, broadcaster.localStream);
      }
      await pc.setLocalDescription(await pc.createAnswer());
      if (peers.get(viewerId) !== pc) return;
      app.socket.emit("answer", { target: viewerId, sdp: plainDescription(pc.localDescription) });
    } catch (err) {
      console.error("Could not answer viewer", viewerId, err);
      if (peers.get(viewerId) === pc) closePeer(viewerId);
    }
  }

  function onBroadcasterPeerState(viewerId, pc) {
    // The protocol does not say when a viewer leaves; its failed connection does.
    if (pc.connectionState === "failed" || pc.connectionState === "closed") closePeer(viewerId);
  }

  function onViewerCount(payload) {
    if (!payload || payload.channel_id !== app.channelId) return;
    if (typeof payload.count === "number") setViewerCount(payload.count);
  }

  function setViewerCount(count) {
    broadcaster.viewerCount = count;
    bui.viewerCount.textContent = String(count);
    renderViewerCountLabel();
  }

  /** Viewers stay in a stopped channel, waiting; only a live one is being watched. */
  function renderViewerCountLabel() {
    const count = broadcaster.viewerCount;
    const noun = count === 1 ? "viewer" : "viewers";
    bui.viewerCountLabel.textContent = app.phase.state === "live" ? `${noun} watching` : `${noun} waiting`;
  }

  function stopBroadcast() {
    if (!app.channelId) return;
    broadcaster.wantLive = false;
    clearTimeout(broadcaster.rejoinTimer);
    request("stop", "stop_broadcast", { channel_id: app.channelId });
    // Viewers are told by the server; the camera preview stays on for a quick restart.
    closeAllPeers();
    setPhase("stopped", `Broadcast stopped. Press "Go live again" to resume channel ${app.channelId}.`);
  }

  function onChannelExpired(payload) {
    if (!payload || payload.channel_id !== app.channelId) return;
    broadcaster.wantLive = false;
    broadcaster.ownsChannel = false;
    closeAllPeers();
    bui.viewerLink.value = "";
    setViewerCount(0);
    setChatEnabled(false);
    setPhase("expired", `Channel ${payload.channel_id} closed after a while without viewers. Press Start to go live again.`);
  }

  async function copyViewerLink() {
    const link = bui.viewerLink.value;
    if (!link) return;
    let copied = false;
    try {
      // Needs a secure context (HTTPS or localhost).
      await navigator.clipboard.writeText(link);
      copied = true;
    } catch {
      copied = false;
    }
    bui.viewerLink.focus();
    bui.viewerLink.select();
    flashButton(bui.copyBtn, copied ? "Copied!" : "Selected");
  }

  function flashButton(button, text) {
    const original = button.dataset.label || button.textContent;
    button.dataset.label = original;
    button.textContent = text;
    clearTimeout(button.flashTimer);
    button.flashTimer = setTimeout(() => {
      button.textContent = original;
    }, 1500);
  }

  // ---------------------------------------------------------------------------------------------
  // Viewer mode
  // ---------------------------------------------------------------------------------------------

  const viewer = {
    broadcasterId: null,
    /** In the channel as far as the server knows (between broadcaster_available and leaving). */
    joined: false,
    alias: null,
    /**
     * Socket id under which the server stores our alias; null once that membership is gone
     * (reconnect, channel removed), so the alias is sent again on the next join.
     */
    aliasSocketId: null,
    peerRetries: 0,
    peerRetryTimer: null,
    leftPolls: 0,
    leftPollTimer: null,
    channels: [],
    channelsReceivedAt: 0,
  };

  const vui = {};

  /** What the empty player says, by viewer state (the status line has the details). */
  const PLAYER_PLACEHOLDER = {
    waiting: "Waiting for video…",
    stopped: "Stream paused",
    "broadcaster-left": "The broadcaster left",
  };

  const viewerMode = {
    init() {
      Object.assign(vui, {
        view: $("viewer-view"),
        picker: $("channel-picker"),
        video: $("remote-video"),
        placeholder: $("remote-placeholder"),
        unmuteBtn: $("unmute-btn"),
        list: $("channel-list"),
        listEmpty: $("channel-list-empty"),
        refreshBtn: $("refresh-channels-btn"),
        joinForm: $("join-form"),
        channelInput: $("channel-input"),
        aliasArea: $("alias-area"),
        aliasCurrent: $("alias-current"),
        aliasBtn: $("alias-btn"),
        aliasDialog: $("alias-dialog"),
        aliasForm: $("alias-form"),
        aliasInput: $("alias-input"),
        aliasCancel: $("alias-cancel"),
      });
      vui.picker.hidden = false;
      vui.aliasArea.hidden = false;
      const channel = (params.get("channel") || "").trim();
      vui.channelInput.value = channel || "";
      app.channelId = channel || null;
      app.phase = { state: "idle", text: "" };

      vui.refreshBtn.addEventListener("click", requestChannelList);
      vui.joinForm.addEventListener("submit", (event) => {
        event.preventDefault();
        goToChannel(vui.channelInput.value.trim());
      });
      vui.unmuteBtn.addEventListener("click", toggleMute);
      vui.video.addEventListener("playing", onRemotePlaying);
      vui.aliasBtn.addEventListener("click", openAliasDialog);
      vui.aliasCancel.addEventListener("click", () => vui.aliasDialog.close());
      vui.aliasForm.addEventListener("submit", (event) => {
        event.preventDefault();
        saveAlias();
      });
      setInterval(tickChannelAges, AGE_TICK_MS);
      setInterval(() => {
        if (!document.hidden) requestChannelList();
      }, CHANNEL_LIST_REFRESH_MS);
      document.addEventListener("visibilitychange", () => {
        if (!document.hidden) requestChannelList();
      });
    },

    bindSocket(socket) {
      socket.on("channel_list", onChannelList);
      socket.on("broadcaster_available", onBroadcasterAvailable);
      socket.on("answer", onBroadcasterAnswer);
      socket.on("broadcaster_stopped", onBroadcasterStopped);
      socket.on("broadcaster_disconnected", onBroadcasterDisconnected);
      socket.on("alias_set", onAliasSet);
    },

    onConnect(isReconnect) {
      requestChannelList();
      if (!app.channelId) {
        setPhase("idle", "Pick a live channel to watch, or enter a channel id.");
        return;
      }
      if (isReconnect && app.phase.state === "not-found") {
        renderStatus();
        return;
      }
      if (isReconnect && app.phase.state === "broadcaster-left") {
        pollForReturningBroadcaster();
        return;
      }
      // First visit with &channel=, or our reconnect: the server forgot our old socket, so
      // join again; broadcaster_available then starts a fresh negotiation.
      joinChannel(app.channelId, isReconnect ? "rejoin" : "join");
    },

    onClientId() {
      renderAliasCurrent();
    },

    onError(message, lastRequest) {
      const notFound = /not found or expired/.test(message);
      if (notFound && app.phase.state === "broadcaster-left" && lastRequest === "poll") {
        // Still gone; keep waiting quietly.
        return;
      }
      if (notFound && lastRequest === "rejoin") {
        // After our own reconnect the broadcaster may simply not be back yet (e.g. the server
        // restarted); wait for it as if it had left.
        leaveChannel();
        setPhase("broadcaster-left", "The broadcast is gone for now. This page reconnects if it comes back.");
        pollForReturningBroadcaster();
        return;
      }
      if (notFound && (lastRequest === "join" || lastRequest === "poll")) {
        leaveChannel();
        setPhase("not-found", message);
        requestChannelList();
        return;
      }
      setPhase("error", message);
    },

    render() {
      const inChannel = Boolean(app.channelId) &&
        ["waiting", "live", "stopped", "broadcaster-left"].includes(app.phase.state);
      vui.view.hidden = !inChannel;
      vui.placeholder.textContent = PLAYER_PLACEHOLDER[app.phase.state] || PLAYER_PLACEHOLDER.waiting;
      showChat(inChannel || viewer.joined);
      setChatEnabled(viewer.joined && app.connection === "connected");
      vui.aliasBtn.disabled = !(viewer.joined && app.connection === "connected");
      vui.refreshBtn.disabled = app.connection !== "connected";
      renderChannelMarks();
    },
  };

  /** Manual entry and list links both navigate, so one page watches exactly one channel. */
  function goToChannel(channelId) {
    if (!channelId) {
      vui.channelInput.focus();
      return;
    }
    window.location.assign(channelHref(channelId));
  }

  function channelHref(channelId) {
    return `/?viewer=true&channel=${encodeURIComponent(channelId)}`;
  }

  function joinChannel(channelId, kind = "join") {
    app.channelId = channelId;
    setPhase("waiting", `Joining channel ${channelId}…`);
    request(kind, "join_as_viewer", { channel_id: channelId });
  }

  function leaveChannel() {
    stopLeftPolling();
    clearTimeout(viewer.peerRetryTimer);
    closeAllPeers();
    clearRemoteVideo();
    viewer.joined = false;
    viewer.broadcasterId = null;
    viewer.aliasSocketId = null;
    showChatError("");
  }

  function onBroadcasterAvailable(payload) {
    if (!payload || typeof payload.broadcaster_id !== "string") return;
    if (payload.channel_id && payload.channel_id !== app.channelId) return;
    stopLeftPolling();
    viewer.joined = true;
    restoreAlias();
    setPhase("waiting", `Joined channel ${app.channelId}. Waiting for video…`);
    offerToBroadcaster(payload.broadcaster_id);
  }

  /** Viewers make the offer (recvonly); every broadcaster_available starts a fresh connection. */
  async function offerToBroadcaster(broadcasterId) {
    closeAllPeers();
    clearRemoteVideo();
    viewer.broadcasterId = broadcasterId;
    const pc = createPeer(broadcasterId, onViewerPeerState);
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = ({ track }) => {
      stream.addTrack(track);
      vui.unmuteBtn.hidden = false;
      if (vui.video.srcObject !== stream) vui.video.srcObject = stream;
      vui.video.play().catch(() => {
        // Autoplay with sound can be refused; the video starts muted, so this is rare.
      });
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      if (peers.get(broadcasterId) !== pc) return;
      app.socket.emit("offer", { target: broadcasterId, sdp: plainDescription(pc.localDescription) });
    } catch (err) {
      console.error("Could not create an offer", err);
      setPhase("error", `Could not start the video connection: ${err.message || err}`);
    }
  }

  async function onBroadcasterAnswer(payload) {
    if (!payload || typeof payload.sender !== "string" || !payload.sdp) return;
    const pc = peers.get(payload.sender);
    if (!pc) return;
    try {
      await applyRemoteDescription(payload.sender, pc, payload.sdp);
    } catch (err) {
      console.error("Could not apply the broadcaster's answer", err);
      schedulePeerRetry();
    }
  }

  function onViewerPeerState(broadcasterId, pc) {
    const state = pc.connectionState;
    if (state === "connected") {
      viewer.peerRetries = 0;
      if (isRemoteVideoPlaying()) showWatching();
    } else if (state === "disconnected") {
      setPhase("waiting", "Connection to the broadcaster interrupted. Waiting for it to recover…");
    } else if (state === "failed") {
      setPhase("waiting", "Lost the connection to the broadcaster. Retrying…");
      schedulePeerRetry();
    }
  }

  /** Asks the server for broadcaster_available again, which restarts negotiation. */
  function schedulePeerRetry() {
    clearTimeout(viewer.peerRetryTimer);
    const delay = Math.min(PEER_RETRY_BASE_MS * 2 ** viewer.peerRetries, PEER_RETRY_MAX_MS);
    viewer.peerRetries += 1;
    viewer.peerRetryTimer = setTimeout(() => {
      if (app.socket.connected && viewer.joined && app.channelId) {
        request("join", "join_as_viewer", { channel_id: app.channelId });
      }
    }, delay);
  }

  function onRemotePlaying() {
    vui.placeholder.hidden = true;
    const pc = viewer.broadcasterId && peers.get(viewer.broadcasterId);
    if (pc && pc.connectionState !== "failed") showWatching();
  }

  function isRemoteVideoPlaying() {
    const video = vui.video;
    return Boolean(video.srcObject) && !video.paused && video.readyState >= 2;
  }

  function showWatching() {
    setPhase("live", `Watching channel ${app.channelId}`);
  }

  function clearRemoteVideo() {
    vui.video.srcObject = null;
    vui.placeholder.hidden = false;
    vui.unmuteBtn.hidden = true;
  }

  function toggleMute() {
    vui.video.muted = !vui.video.muted;
    vui.unmuteBtn.textContent = vui.video.muted ? "Unmute" : "Mute";
    if (!vui.video.muted) vui.video.play().catch(() => {});
  }

  function onBroadcasterStopped(payload) {
    if (payload && payload.channel_id && payload.channel_id !== app.channelId) return;
    clearTimeout(viewer.peerRetryTimer);
    closeAllPeers();
    clearRemoteVideo();
    // We are still in the channel: broadcaster_available arrives when it goes live again.
    setPhase("stopped", "The broadcaster stopped the stream. It resumes here if they go live again.");
  }

  function onBroadcasterDisconnected() {
    // The server removed the channel, and our membership (and alias) with it.
    leaveChannel();
    setPhase("broadcaster-left", "Broadcaster left the channel. This page reconnects if they come back.");
    requestChannelList();
    pollForReturningBroadcaster();
  }

  /** The server removed the channel; ask for it again for a while in case it comes back. */
  function pollForReturningBroadcaster() {
    stopLeftPolling();
    viewer.leftPolls = 0;
    const poll = () => {
      if (app.phase.state !== "broadcaster-left") return;
      if (viewer.leftPolls >= LEFT_POLL_LIMIT) {
        setPhase("broadcaster-left", "Broadcaster left the channel.");
        return;
      }
      viewer.leftPolls += 1;
      if (app.socket.connected) request("poll", "join_as_viewer", { channel_id: app.channelId });
      viewer.leftPollTimer = setTimeout(poll, leftPollDelay(viewer.leftPolls));
    };
    viewer.leftPollTimer = setTimeout(poll, leftPollDelay(0));
  }

  function leftPollDelay(pollsSoFar) {
    return Math.min(LEFT_POLL_MS, LEFT_POLL_FIRST_MS * 2 ** pollsSoFar);
  }

  function stopLeftPolling() {
    clearTimeout(viewer.leftPollTimer);
    viewer.leftPollTimer = null;
  }

  // --- Channel list ---

  function requestChannelList() {
    // A join without a channel id only lists channels; it does not change membership.
    if (app.socket && app.socket.connected) app.socket.emit("join_as_viewer", {});
  }

  function onChannelList(payload) {
    viewer.channels = payload && Array.isArray(payload.channels) ? payload.channels : [];
    viewer.channelsReceivedAt = Date.now();
    renderChannelList();
  }

  /** Updates the list in place (keyed by channel id) so a click never lands on a replaced row. */
  function renderChannelList() {
    const existing = new Map();
    for (const item of vui.list.querySelectorAll("li[data-channel-id]")) {
      existing.set(item.dataset.channelId, item);
    }
    const rows = viewer.channels
      .filter((channel) => channel && typeof channel.id === "string")
      .map((channel) => existing.get(channel.id) || createChannelRow(channel.id));
    vui.list.replaceChildren(...rows);
    vui.listEmpty.hidden = rows.length > 0;
    tickChannelAges();
    renderChannelMarks();
  }

  function createChannelRow(channelId) {
    const item = document.createElement("li");
    item.className = "channel";
    item.dataset.channelId = channelId;
    const name = document.createElement("span");
    name.className = "channel-name";
    name.textContent = channelId;
    const age = document.createElement("span");
    age.className = "channel-age";
    const link = document.createElement("a");
    link.className = "join-channel button";
    link.href = channelHref(channelId);
    link.textContent = "Watch";
    link.setAttribute("aria-label", `Watch channel ${channelId}`);
    item.append(name, age, link);
    return item;
  }

  function tickChannelAges() {
    const elapsed = Math.max(0, Math.floor((Date.now() - viewer.channelsReceivedAt) / 1000));
    const ages = new Map(viewer.channels.map((c) => [c.id, Number(c.age_seconds) || 0]));
    for (const item of vui.list.querySelectorAll("li[data-channel-id]")) {
      const ageEl = item.querySelector(".channel-age");
      const seconds = (ages.get(item.dataset.channelId) || 0) + elapsed;
      ageEl.textContent = `started ${formatAge(seconds)} ago`;
    }
  }

  function formatAge(seconds) {
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    return `${hours} h ${minutes % 60} min`;
  }

  /** Marks the channel this page is watching in the list. */
  function renderChannelMarks() {
    if (!vui.list) return;
    for (const item of vui.list.querySelectorAll("li[data-channel-id]")) {
      const current = item.dataset.channelId === app.channelId && viewer.joined;
      item.classList.toggle("current", current);
      const link = item.querySelector(".join-channel");
      link.textContent = current ? "Watching" : "Watch";
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  // --- Alias ---

  function openAliasDialog() {
    vui.aliasInput.value = viewer.alias || "";
    showAliasError("");
    vui.aliasDialog.showModal();
    vui.aliasInput.focus();
  }

  function saveAlias() {
    if (!app.channelId || !app.socket.connected) return;
    showAliasError("");
    // Trimmed like legacy pages; the server validates and explains what is wrong.
    const alias = vui.aliasInput.value.trim();
    request("alias", "set_alias", { channel_id: app.channelId, alias });
  }

  function onAliasSet(payload) {
    if (!payload || typeof payload.alias !== "string") return;
    viewer.alias = payload.alias;
    viewer.aliasSocketId = app.myId;
    renderAliasCurrent();
    showAliasError("");
    if (vui.aliasDialog.open) vui.aliasDialog.close();
  }

  /** After a reconnect the server knows a new socket without alias: give it ours again. */
  function restoreAlias() {
    if (viewer.alias && viewer.aliasSocketId !== app.myId) {
      request("alias", "set_alias", { channel_id: app.channelId, alias: viewer.alias });
    }
  }

  function renderAliasCurrent() {
    if (vui.aliasCurrent) vui.aliasCurrent.textContent = myChatName() || "";
  }

  function showAliasError(text) {
    const el = $("alias-error");
    if (el) el.textContent = text;
  }

  // ---------------------------------------------------------------------------------------------

  start();
})();
