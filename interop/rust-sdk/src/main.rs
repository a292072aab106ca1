//! A Matrix client on matrix-rust-sdk, the SDK inside Element X, for
//! Hearth's interop tests (interop/rustsdk). It logs in with a password,
//! runs matrix-sdk-ui's RoomListService (simplified sliding sync, MSC4186)
//! until the room list holds the expected number of rooms, and prints the
//! list, in the order the SDK sorts it (recency), as one JSON line on
//! stdout. Given a room and a number of messages, it then opens that
//! room's matrix-sdk-ui Timeline and paginates back until it holds that
//! many messages (or reaches the room's start), and prints their bodies
//! too. The Go test checks that line against what it set up.
//!
//! Usage: hearth-rust-sdk-client HOMESERVER_URL USER PASSWORD EXPECTED_ROOMS [ROOM_ID MESSAGES]

#![recursion_limit = "256"]

use std::time::Duration;

use anyhow::{bail, Context, Result};
use eyeball_im::Vector;
use futures_util::{pin_mut, StreamExt};
use matrix_sdk::{ruma::RoomId, Client};
use matrix_sdk_ui::{
    room_list_service::{filters, RoomListItem, RoomListService},
    timeline::RoomExt,
};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 && args.len() != 7 {
        bail!("usage: {} HOMESERVER_URL USER PASSWORD EXPECTED_ROOMS [ROOM_ID MESSAGES]", args[0]);
    }
    let (url, user, password) = (&args[1], &args[2], &args[3]);
    let expected: usize = args[4].parse().context("EXPECTED_ROOMS")?;

    let client = Client::builder().homeserver_url(url).build().await?;
    client
        .matrix_auth()
        .login_username(user, password)
        .initial_device_display_name("hearth rust-sdk interop")
        .await
        .context("password login")?;
    let me = client.user_id().context("no user ID after login")?.to_owned();
    eprintln!("logged in as {me}");

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
                return Err(anyhow::anyhow!("sync: {e}"));
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
        out.push(serde_json::json!({
            "room_id": r.room_id().to_string(),
            "name": r.cached_display_name().map(|n| n.to_string()),
            "notification_count": counts.notification_count,
            "highlight_count": counts.highlight_count,
            "recency_stamp": r.recency_stamp().map(u64::from),
            "joined_members": r.joined_members_count(),
        }));
    }
    let mut result = serde_json::json!({ "user_id": me.to_string(), "rooms": out });

    if args.len() == 7 {
        let room_id = RoomId::parse(&args[5]).context("ROOM_ID")?;
        let want: usize = args[6].parse().context("MESSAGES")?;
        let room = client.get_room(&room_id).context("the room is not in the client")?;
        let timeline = room.timeline().await.context("timeline")?;
        let bodies = |items: &Vector<std::sync::Arc<matrix_sdk_ui::timeline::TimelineItem>>| -> Vec<String> {
            items
                .iter()
                .filter_map(|i| i.as_event())
                .filter_map(|e| e.content().as_message().map(|m| m.body().to_owned()))
                .collect()
        };
        let mut got = bodies(&timeline.items().await);
        let mut pages = 0;
        while got.len() < want && pages < 50 {
            let at_start = timeline.paginate_backwards(20).await.context("back-paginate")?;
            pages += 1;
            got = bodies(&timeline.items().await);
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
            got = bodies(&timeline.items().await);
        }
        result["timeline"] = serde_json::json!(got);
        result["pages"] = serde_json::json!(pages);
    }
    println!("{result}");
    sync.abort();
    Ok(())
}
