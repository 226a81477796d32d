//! Realistic signaling payloads: a browser's recvonly audio+video offer (about 3 KB), the
//! broadcaster's answer, and trickled ICE candidates in `RTCIceCandidate.toJSON()` form.
//! Each viewer's offer carries its own ICE credentials and fingerprint, as real ones do.

use serde_json::{Value, json};

const VIDEO_CODECS: &[(u32, &str, Option<&str>)] = &[
    (96, "VP8/90000", None),
    (98, "VP9/90000", Some("profile-id=0")),
    (100, "VP9/90000", Some("profile-id=2")),
    (
        102,
        "H264/90000",
        Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
    ),
    (
        106,
        "H264/90000",
        Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
    ),
    (
        112,
        "H264/90000",
        Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"),
    ),
    (45, "AV1/90000", Some("level-idx=5;profile=0;tier=0")),
];

fn hex_fingerprint(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..32)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:02X}", x as u8)
        })
        .collect::<Vec<_>>()
        .join(":")
}

fn token(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
    let mut x = seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// The ICE username fragment of peer `i`.
pub(crate) fn ufrag(i: u64) -> String {
    token(i, 4)
}

fn session_description(i: u64, kind: &str) -> String {
    let direction = if kind == "offer" {
        "recvonly"
    } else {
        "sendonly"
    };
    let setup = if kind == "offer" { "actpass" } else { "active" };
    let mut s = String::with_capacity(3200);
    let mut line = |l: &str| {
        s.push_str(l);
        s.push_str("\r\n");
    };
    line("v=0");
    line(&format!(
        "o=- {} 2 IN IP4 127.0.0.1",
        4_611_731_400_430_051_336u64.wrapping_add(i)
    ));
    line("s=-");
    line("t=0 0");
    line("a=group:BUNDLE 0 1");
    line("a=extmap-allow-mixed");
    line("a=msid-semantic: WMS");
    let credentials = |line: &mut dyn FnMut(&str), mid: u32| {
        line(&format!("a=ice-ufrag:{}", ufrag(i)));
        line(&format!("a=ice-pwd:{}", token(i + 7, 24)));
        line("a=ice-options:trickle");
        line(&format!("a=fingerprint:sha-256 {}", hex_fingerprint(i)));
        line(&format!("a=setup:{setup}"));
        line(&format!("a=mid:{mid}"));
    };
    line("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126");
    line("c=IN IP4 0.0.0.0");
    line("a=rtcp:9 IN IP4 0.0.0.0");
    credentials(&mut line, 0);
    line("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level");
    line("a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time");
    line("a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01");
    line("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid");
    line(&format!("a={direction}"));
    line("a=rtcp-mux");
    line("a=rtpmap:111 opus/48000/2");
    line("a=rtcp-fb:111 transport-cc");
    line("a=fmtp:111 minptime=10;useinbandfec=1");
    line("a=rtpmap:63 red/48000/2");
    line("a=fmtp:63 111/111");
    line("a=rtpmap:9 G722/8000");
    line("a=rtpmap:0 PCMU/8000");
    line("a=rtpmap:8 PCMA/8000");
    line("a=rtpmap:13 CN/8000");
    line("a=rtpmap:110 telephone-event/48000");
    line("a=rtpmap:126 telephone-event/8000");
    let payloads: Vec<String> = VIDEO_CODECS
        .iter()
        .flat_map(|(pt, _, _)| [pt.to_string(), (pt + 1).to_string()])
        .collect();
    line(&format!(
        "m=video 9 UDP/TLS/RTP/SAVPF {}",
        payloads.join(" ")
    ));
    line("c=IN IP4 0.0.0.0");
    line("a=rtcp:9 IN IP4 0.0.0.0");
    credentials(&mut line, 1);
    line("a=extmap:14 urn:ietf:params:rtp-hdrext:toffset");
    line("a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time");
    line("a=extmap:13 urn:3gpp:video-orientation");
    line("a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01");
    line("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid");
    line(&format!("a={direction}"));
    line("a=rtcp-mux");
    line("a=rtcp-rsize");
    for (pt, codec, fmtp) in VIDEO_CODECS {
        line(&format!("a=rtpmap:{pt} {codec}"));
        for fb in ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"] {
            line(&format!("a=rtcp-fb:{pt} {fb}"));
        }
        if let Some(fmtp) = fmtp {
            line(&format!("a=fmtp:{pt} {fmtp}"));
        }
        line(&format!("a=rtpmap:{} rtx/90000", pt + 1));
        line(&format!("a=fmtp:{} apt={pt}", pt + 1));
    }
    s
}

/// `{type: "offer", sdp}` of viewer `i`, serialized.
pub(crate) fn offer(i: u64) -> String {
    json!({"type": "offer", "sdp": session_description(i, "offer")}).to_string()
}

/// `{type: "answer", sdp}` of the broadcaster, serialized.
pub(crate) fn answer() -> String {
    json!({"type": "answer", "sdp": session_description(0, "answer")}).to_string()
}

/// The `k`-th trickled candidate of peer `i`, serialized.
pub(crate) fn candidate(i: u64, k: u32) -> String {
    let kinds = ["host", "srflx", "host", "relay"];
    let kind = kinds[k as usize % kinds.len()];
    let c: Value = json!({
        "candidate": format!(
            "candidate:{} 1 udp {} 127.0.0.1 {} typ {kind} generation 0 ufrag {} network-id 1 network-cost 10",
            842_163_049u64 + i * 4 + u64::from(k),
            2_122_260_223u32 - k * 1000,
            40_000 + (i % 20_000) + u64::from(k),
            ufrag(i)
        ),
        "sdpMid": (k % 2).to_string(),
        "sdpMLineIndex": k % 2,
        "usernameFragment": ufrag(i),
    });
    c.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_is_about_three_kilobytes_and_distinct_per_viewer() {
        let a = offer(1);
        let b = offer(2);
        assert!(
            (2_800..4_500).contains(&a.len()),
            "offer is {} bytes",
            a.len()
        );
        assert_ne!(a, b);
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["type"], "offer");
        assert!(v["sdp"].as_str().unwrap().contains("a=recvonly"));
    }

    #[test]
    fn candidate_is_an_ice_candidate_init() {
        let v: Value = serde_json::from_str(&candidate(3, 1)).unwrap();
        assert!(v["candidate"].as_str().unwrap().starts_with("candidate:"));
        assert_eq!(v["sdpMLineIndex"], 1);
        assert!(candidate(3, 1).len() < 4096);
    }
}
