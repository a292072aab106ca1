//! A Matrix client on matrix-rust-sdk, the SDK inside Element X, for
//! Hearth's interop tests (interop/rustsdk). The first argument picks what
//! it does; each mode prints one JSON line on stdout that the Go test
//! checks against what it set up (and, for the browser steps, reads lines
//! it must act on: see each mode).
//!
//!   rooms URL USER PASSWORD EXPECTED_ROOMS [ROOM_ID MESSAGES]
//!     Password login, matrix-sdk-ui's RoomListService (simplified sliding
//!     sync, MSC4186) until the list holds the expected rooms, printed in
//!     the SDK's order (recency); then, given a room, its Timeline paged
//!     back until it holds that many messages.
//!   e2ee URL SENDER RECEIVER PASSWORD ROOM_ID BODY
//!     Two SDK clients, each a new device with its own crypto store, run
//!     matrix-sdk-ui's SyncService; the sender sends BODY in the encrypted
//!     room (the SDK queries, claims and shares the room key), and the
//!     receiver's Timeline must show it decrypted.
//!   oauth URL ROOM_ID BODY
//!     OAuth 2.0 login (client.oauth()): dynamic registration, the
//!     authorization URL with PKCE, printed as {"authorize": URL} for the
//!     test's browser; the redirect reaches this process's loopback
//!     listener; then sync, refresh the token, and send BODY to the room.
//!   qr URL USER PASSWORD
//!     QR-code login (MSC4108): the existing device (password login,
//!     cross-signing bootstrapped) generates the QR code; a second client
//!     scans it, and the two set up the secure channel over Hearth's
//!     rendezvous, exchange the check code, and the new device asks for the
//!     device authorization grant. The existing device prints
//!     {"verification_uri": URL} for the test's browser to approve; the new
//!     device then signs in, gets the secrets and cross-signs itself.

#![recursion_limit = "256"]

use std::{sync::Arc, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use eyeball_im::Vector;
use futures_util::{pin_mut, StreamExt};
use matrix_sdk::{
    authentication::oauth::{
        qrcode::{GeneratedQrProgress, GrantLoginProgress, LoginProgress},
        registration::{ApplicationType, ClientMetadata, Localized, OAuthGrantType},
        ClientRegistrationData,
    },
    config::SyncSettings,
    ruma::{
        events::room::message::RoomMessageEventContent, serde::Raw, OwnedEventId, RoomId,
    },
    utils::UrlOrQuery,
    Client,
};
use matrix_sdk_ui::{
    room_list_service::{filters, RoomListItem, RoomListService},
    sync_service::SyncService,
    timeline::{RoomExt, TimelineItem},
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("rooms") if args.len() == 5 || args.len() == 7 => rooms(&args[1..]).await?,
        Some("e2ee") if args.len() == 7 => e2ee(&args[1..]).await?,
        Some("oauth") if args.len() == 4 => oauth(&args[1..]).await?,
        Some("qr") if args.len() == 4 => qr(&args[1..]).await?,
        _ => bail!("usage: hearth-rust-sdk-client rooms|e2ee|oauth|qr ARGS (see src/main.rs)"),
    };
    println!("{out}");
    Ok(())
}

/// A client for the homeserver at url, with in-memory stores (a fresh
/// device), refreshing its access token when the server says it expired.
async fn new_client(url: &str) -> Result<Client> {
    Ok(Client::builder().homeserver_url(url).handle_refresh_tokens().build().await?)
}

async fn password_login(url: &str, user: &str, password: &str) -> Result<Client> {
    let client = new_client(url).await?;
    client
        .matrix_auth()
        .login_username(user, password)
        .initial_device_display_name("hearth rust-sdk interop")
        .await
        .with_context(|| format!("password login as {user}"))?;
    eprintln!("{user}: logged in as {:?} {:?}", client.user_id(), client.device_id());
    Ok(client)
}

/// The client metadata a native app registers: a loopback redirect
/// without a port (RFC 8252) and the device authorization grant.
fn registration() -> Result<ClientRegistrationData> {
    let mut metadata = ClientMetadata::new(
        ApplicationType::Native,
        vec![
            OAuthGrantType::AuthorizationCode {
                redirect_uris: vec!["http://127.0.0.1/callback".parse()?],
            },
            OAuthGrantType::DeviceCode,
        ],
        Localized::new("https://interop.hearth.invalid/".parse()?, []),
    );
    metadata.client_name = Some(Localized::new("Hearth rust-sdk interop".to_owned(), []));
    Ok(Raw::new(&metadata)?.into())
}

fn message_bodies(items: &Vector<Arc<TimelineItem>>) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i.as_event())
        .filter_map(|e| e.content().as_message().map(|m| m.body().to_owned()))
        .collect()
}

async fn rooms(args: &[String]) -> Result<Value> {
    let (url, user, password) = (&args[0], &args[1], &args[2]);
    let expected: usize = args[3].parse().context("EXPECTED_ROOMS")?;
    let client = password_login(url, user, password).await?;
    let me = client.user_id().context("no user ID after login")?.to_owned();

    let service = RoomListService::new(client.clone()).await?;
    let all_rooms = service.all_rooms().await?;
    let (entries, controller) = all_rooms.entries_with_dynamic_adapters(200);
    controller.set_filter(Box::new(filters::new_filter_non_left()));
    pin_mut!(entries);

    // The sync loop runs beside the reader of the list.
    let sync = tokio::spawn(async move {
        let stream = service.sync();
        pin_mut!(stream);
        while let Some(r) = stream.next().await {
            if let Err(e) = r {
                eprintln!("sync error: {e}");
                return Err(anyhow!("sync: {e}"));
            }
        }
        Ok(())
    });

    let mut rooms: Vector<RoomListItem> = Vector::new();
    let wait = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(diffs) = entries.next().await {
            for d in diffs {
                d.apply(&mut rooms);
            }
            if rooms.len() >= expected && rooms.iter().all(|r| r.cached_display_name().is_some()) {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(wait, Ok(true)) {
        bail!("room list has {} rooms after waiting, want {expected}", rooms.len());
    }
    // The list settles as the SDK re-sorts and refreshes rooms: apply the
    // diffs until none comes for a second.
    while let Ok(Some(diffs)) = tokio::time::timeout(Duration::from_secs(1), entries.next()).await {
        for d in diffs {
            d.apply(&mut rooms);
        }
    }

    let mut out = Vec::new();
    for r in rooms.iter() {
        let counts = r.unread_notification_counts();
        out.push(json!({
            "room_id": r.room_id().to_string(),
            "name": r.cached_display_name().map(|n| n.to_string()),
            "notification_count": counts.notification_count,
            "highlight_count": counts.highlight_count,
            "recency_stamp": r.recency_stamp().map(u64::from),
            "joined_members": r.joined_members_count(),
        }));
    }
    let mut result = json!({ "user_id": me.to_string(), "rooms": out });

    if args.len() == 6 {
        let room_id = RoomId::parse(&args[4]).context("ROOM_ID")?;
        let want: usize = args[5].parse().context("MESSAGES")?;
        let room = client.get_room(&room_id).context("the room is not in the client")?;
        let timeline = room.timeline().await.context("timeline")?;
        let mut got = message_bodies(&timeline.items().await);
        let mut pages = 0;
        while got.len() < want && pages < 50 {
            let at_start = timeline.paginate_backwards(20).await.context("back-paginate")?;
            pages += 1;
            got = message_bodies(&timeline.items().await);
            if at_start {
                break;
            }
        }
        // Paginated events reach the timeline's items asynchronously.
        for _ in 0..50 {
            if got.len() >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            got = message_bodies(&timeline.items().await);
        }
        result["timeline"] = json!(got);
        result["pages"] = json!(pages);
    }
    sync.abort();
    Ok(result)
}

/// Runs matrix-sdk-ui's SyncService (the room list and the encryption
/// sync, with the to_device and e2ee extensions) for client.
async fn start_sync(client: &Client) -> Result<SyncService> {
    let sync = SyncService::builder(client.clone()).build().await?;
    sync.start().await;
    Ok(sync)
}

/// Waits (up to a minute) until f gives a value.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    for _ in 0..600 {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting for {what}")
}

async fn e2ee(args: &[String]) -> Result<Value> {
    let (url, sender, receiver, password) = (&args[0], &args[1], &args[2], &args[3]);
    let room_id = RoomId::parse(&args[4]).context("ROOM_ID")?;
    let body = &args[5];

    // The receiver's device first, so that its keys are on the server when
    // the sender shares the room key.
    let bob = password_login(url, receiver, password).await?;
    let bob_sync = start_sync(&bob).await?;
    bob.encryption().wait_for_e2ee_initialization_tasks().await;
    let bob_id = bob.user_id().context("receiver's user ID")?.to_owned();
    let bob_device = bob.device_id().context("receiver's device ID")?.to_owned();

    let alice = password_login(url, sender, password).await?;
    let alice_sync = start_sync(&alice).await?;
    alice.encryption().wait_for_e2ee_initialization_tasks().await;

    // The receiver's new device must have uploaded its keys: ask the server
    // through the sender (a /keys/query of its own).
    wait_for("the receiver's device keys", || {
        let (alice, bob_id, bob_device) = (alice.clone(), bob_id.clone(), bob_device.clone());
        async move {
            let mut req = matrix_sdk::ruma::api::client::keys::get_keys::v3::Request::new();
            req.device_keys.insert(bob_id.clone(), vec![]);
            let resp = alice.send(req).await?;
            Ok(resp.device_keys.get(&bob_id).and_then(|d| d.get(&bob_device)).map(|_| ()))
        }
    })
    .await?;

    let room = wait_for("the room in the sender's client", || {
        let alice = alice.clone();
        let room_id = room_id.clone();
        async move { Ok(alice.get_room(&room_id)) }
    })
    .await?;
    if !room.latest_encryption_state().await?.is_encrypted() {
        bail!("the sender's SDK does not see {room_id} as encrypted");
    }
    let sent = room.send(RoomMessageEventContent::text_plain(body.as_str())).await?;
    let event_id: OwnedEventId = sent.response.event_id;
    eprintln!("sent {event_id}");

    let bob_room = wait_for("the room in the receiver's client", || {
        let bob = bob.clone();
        let room_id = room_id.clone();
        async move { Ok(bob.get_room(&room_id)) }
    })
    .await?;
    let timeline = bob_room.timeline().await?;
    let decrypted = wait_for("the decrypted message in the receiver's timeline", || {
        let timeline = &timeline;
        let event_id = &event_id;
        async move {
            for item in timeline.items().await.iter() {
                let Some(e) = item.as_event() else { continue };
                if e.event_id() != Some(event_id) {
                    continue;
                }
                if let Some(m) = e.content().as_message() {
                    let sender_device = e.encryption_info().map(|i| i.sender_device.clone());
                    return Ok(Some((m.body().to_owned(), e.encryption_info().is_some(), sender_device)));
                }
            }
            Ok(None)
        }
    })
    .await;
    let (text, encrypted, sender_device) = match decrypted {
        Ok(v) => v,
        Err(e) => {
            // Say what the timeline held instead (an undecryptable item).
            let items: Vec<String> = timeline
                .items()
                .await
                .iter()
                .filter_map(|i| i.as_event())
                .map(|e| format!("{:?}: {:?}", e.event_id(), e.content()))
                .collect();
            bail!("{e}; the receiver's timeline: {items:#?}");
        }
    };
    alice_sync.stop().await;
    bob_sync.stop().await;
    Ok(json!({
        "event_id": event_id.to_string(),
        "decrypted": text,
        "encryption_info": encrypted,
        "sender_device": sender_device.flatten().map(|d| d.to_string()),
        "sender_device_id": alice.device_id().map(|d| d.to_string()),
        "receiver_device_id": bob_device.to_string(),
    }))
}

/// Serves listener until the browser's redirect to /callback arrives, and
/// returns its URL. Each connection is read on its own task: a browser may
/// open one it never sends on (a preconnect) or ask for a favicon.
async fn accept_redirect(listener: tokio::net::TcpListener, port: u16) -> Result<String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    loop {
        tokio::select! {
            target = rx.recv() => {
                let target = target.context("redirect listener closed")?;
                return Ok(format!("http://127.0.0.1:{port}{target}"));
            }
            conn = listener.accept() => {
                let (stream, _) = conn?;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = answer_redirect(stream, tx).await;
                });
            }
        }
    }
}

/// Reads one request, answers it with a page, and hands on its target if
/// it is the callback.
async fn answer_redirect(stream: tokio::net::TcpStream, tx: tokio::sync::mpsc::Sender<String>) -> Result<()> {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    // GET /callback?code=...&state=... HTTP/1.1
    let target = line.split_whitespace().nth(1).context("request line")?.to_owned();
    loop {
        let mut header = String::new();
        if stream.read_line(&mut header).await? == 0 || header == "\r\n" {
            break;
        }
    }
    let page = "<html><body><p id=done>Signed in; you can close this window.</p></body></html>";
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
    stream.get_mut().write_all(resp.as_bytes()).await?;
    stream.get_mut().shutdown().await?;
    if target.starts_with("/callback") {
        let _ = tx.send(target).await;
    }
    Ok(())
}

async fn oauth(args: &[String]) -> Result<Value> {
    let url = &args[0];
    let room_id = RoomId::parse(&args[1]).context("ROOM_ID")?;
    let body = &args[2];

    // A native app's loopback listener on a port of the moment; the client
    // registered its redirect without a port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let client = new_client(url).await?;
    let oauth = client.oauth();
    let redirect = format!("http://127.0.0.1:{port}/callback").parse()?;
    let data = oauth.login(redirect, None, Some(registration()?), None).build().await.context("authorization URL")?;
    println!("{}", json!({ "authorize": data.url.to_string() }));

    let redirected = tokio::time::timeout(Duration::from_secs(120), accept_redirect(listener, port))
        .await
        .context("no redirect from the browser")??;
    oauth.finish_login(UrlOrQuery::Url(redirected.parse()?)).await.context("finish login")?;
    let me = client.user_id().context("no user ID after OAuth login")?.to_owned();
    let device = client.device_id().context("no device ID")?.to_owned();
    eprintln!("oauth: logged in as {me} {device}");

    client.sync_once(SyncSettings::default()).await.context("sync")?;
    let room = client.get_room(&room_id).context("the room is not in the client after a sync")?;
    let first_token = client.access_token().context("no access token")?;
    oauth.refresh_access_token().await.context("refresh")?;
    let second_token = client.access_token().context("no access token after refresh")?;
    let sent = room.send(RoomMessageEventContent::text_plain(body.as_str())).await.context("send")?;
    Ok(json!({
        "user_id": me.to_string(),
        "device_id": device.to_string(),
        "client_id": oauth.client_id().map(|c| c.as_str().to_owned()),
        "refreshed": first_token != second_token,
        "event_id": sent.response.event_id.to_string(),
    }))
}

async fn qr(args: &[String]) -> Result<Value> {
    let (url, user, password) = (&args[0], &args[1], &args[2]);

    // The existing device: signed in, with cross-signing keys, whose
    // private halves it hands to the new device.
    let existing = password_login(url, user, password).await?;
    existing.encryption().wait_for_e2ee_initialization_tasks().await;
    existing.encryption().bootstrap_cross_signing(None).await.context("bootstrap cross-signing")?;
    let me = existing.user_id().context("user ID")?.to_owned();

    let existing_oauth = existing.oauth();
    let grant = existing_oauth.grant_login_with_qr_code().device_creation_timeout(Duration::from_secs(30)).generate();
    let mut grant_progress = grant.subscribe_to_progress();
    let (qr_tx, qr_rx) = tokio::sync::oneshot::channel();
    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<u8>();

    // The existing device's side: show the QR code, take the check code
    // the new device shows, and print the verification URI to approve.
    let grant_watch = tokio::spawn(async move {
        let (mut qr_tx, mut code_rx) = (Some(qr_tx), Some(code_rx));
        while let Some(state) = grant_progress.next().await {
            match state {
                GrantLoginProgress::EstablishingSecureChannel(GeneratedQrProgress::QrReady(qr)) => {
                    if let Some(tx) = qr_tx.take() {
                        let _ = tx.send(qr);
                    }
                }
                GrantLoginProgress::EstablishingSecureChannel(GeneratedQrProgress::QrScanned(sender)) => {
                    let code = code_rx.take().context("check code asked twice")?.await?;
                    sender.send(code).await.map_err(|e| anyhow!("check code: {e:?}"))?;
                }
                GrantLoginProgress::WaitingForAuth { verification_uri } => {
                    println!("{}", json!({ "verification_uri": verification_uri.to_string() }));
                }
                GrantLoginProgress::Done => break,
                _ => {}
            }
        }
        anyhow::Ok(())
    });
    let granting = async { grant.await.context("grant login") };

    // The new device scans the QR code and shows the check code.
    let new_device = new_client(url).await?;
    let reg = registration()?;
    let logging_in = async {
        let qr = tokio::time::timeout(Duration::from_secs(60), qr_rx).await.context("no QR code")??;
        eprintln!("qr: the existing device shows a QR code for {:?}", qr.intent_data());
        let new_oauth = new_device.oauth();
        let login = new_oauth.login_with_qr_code(Some(&reg)).scan(&qr);
        let mut login_progress = login.subscribe_to_progress();
        let login_watch = tokio::spawn(async move {
            let mut code_tx = Some(code_tx);
            let mut user_code = None;
            while let Some(state) = login_progress.next().await {
                match state {
                    LoginProgress::EstablishingSecureChannel(p) => {
                        if let Some(tx) = code_tx.take() {
                            let _ = tx.send(p.check_code.to_digit());
                        }
                    }
                    LoginProgress::WaitingForToken { user_code: c } => user_code = Some(c),
                    LoginProgress::Done => break,
                    _ => {}
                }
            }
            user_code
        });
        login.await.context("QR login")?;
        let user_code = tokio::time::timeout(Duration::from_secs(5), login_watch).await;
        anyhow::Ok(user_code.ok().and_then(|r| r.ok()).flatten())
    };
    let (_, user_code) = tokio::time::timeout(Duration::from_secs(180), async { tokio::try_join!(granting, logging_in) })
        .await
        .context("QR login timed out")??;
    grant_watch.abort();

    let new_me = new_device.user_id().context("new device: user ID")?.to_owned();
    let new_id = new_device.device_id().context("new device: device ID")?.to_owned();
    new_device.encryption().wait_for_e2ee_initialization_tasks().await;
    // The existing device sees the new one cross-signed by the account.
    let signed = wait_for("the new device cross-signed", || {
        let (existing, me, new_id) = (existing.clone(), me.clone(), new_id.clone());
        async move {
            let _ = existing.encryption().request_user_identity(&me).await;
            existing.sync_once(SyncSettings::default().timeout(Duration::from_millis(100))).await?;
            match existing.encryption().get_device(&me, &new_id).await? {
                Some(d) if d.is_cross_signed_by_owner() => Ok(Some(true)),
                _ => Ok(None),
            }
        }
    })
    .await
    .unwrap_or(false);
    Ok(json!({
        "user_id": new_me.to_string(),
        "device_id": new_id.to_string(),
        "existing_device_id": existing.device_id().map(|d| d.to_string()),
        "user_code": user_code,
        "cross_signed": signed,
        "new_device_verified": new_device.encryption().get_own_device().await?.map(|d| d.is_verified()),
    }))
}
