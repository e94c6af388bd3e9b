//! The organization's hierarchy, breadth first from the root: OUs and
//! accounts per parent, pages of at most 20, a few parents at once. A parent
//! that cannot be read is reported and its subtree skipped; the rest goes on.

use super::{DiscoveryProgress, PAGE_SIZE, describe, each_page};
use crate::adapters::aws::throttle::Throttle;
use aws_sdk_organizations::Client;
use coverwatch_domain::cloud::hierarchy::{DiscoveredAccount, DiscoveredHierarchy, DiscoveredOu};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::Semaphore;

/// Parents read at once. With pacing per operation this only bounds how many
/// requests wait at a time; independent subtrees still overlap.
const PARALLEL_PARENTS: usize = 8;

pub(super) async fn walk(
    client: &Client,
    throttle: &Arc<Throttle>,
    progress: &Arc<DiscoveryProgress>,
) -> DiscoveredHierarchy {
    throttle.wait("ListRoots").await;
    let roots = match client.list_roots().send().await {
        Ok(roots) => roots,
        Err(error) => {
            progress.error(format!("Root: ListRoots: {}", describe(&error)));
            return DiscoveredHierarchy::default();
        }
    };
    progress.pages.fetch_add(1, Ordering::Relaxed);
    let Some(root_id) = roots.roots().first().and_then(|r| r.id()).map(str::to_owned) else {
        return DiscoveredHierarchy::default();
    };
    let permits = Arc::new(Semaphore::new(PARALLEL_PARENTS));
    let mut hierarchy = DiscoveredHierarchy {
        root_id: root_id.clone(),
        ..DiscoveredHierarchy::default()
    };
    let mut level = vec![(root_id.clone(), vec!["Root".to_owned()], vec![root_id])];
    while !level.is_empty() {
        let mut tasks = tokio::task::JoinSet::new();
        for (parent_id, names, ids) in level.drain(..) {
            let (client, permits, progress, throttle) =
                (client.clone(), permits.clone(), progress.clone(), throttle.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                read_parent(&client, &throttle, &progress, parent_id, names, ids).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            let Ok((ous, accounts)) = done else { continue };
            for ou in &ous {
                level.push((ou.id.clone(), ou.path_names.clone(), ou.path_ids.clone()));
            }
            hierarchy.ous.extend(ous);
            hierarchy.accounts.extend(accounts);
        }
    }
    hierarchy.ous.sort_by(|a, b| a.path_names.cmp(&b.path_names));
    hierarchy.accounts.sort_by(|a, b| a.id.cmp(&b.id));
    hierarchy
}

/// The OUs and accounts directly under one parent (all pages).
async fn read_parent(
    client: &Client,
    throttle: &Throttle,
    progress: &DiscoveryProgress,
    parent_id: String,
    names: Vec<String>,
    ids: Vec<String>,
) -> (Vec<DiscoveredOu>, Vec<DiscoveredAccount>) {
    let path = names.join("/");
    let mut ous = vec![];
    let read = each_page(
        throttle,
        progress,
        "ListOrganizationalUnitsForParent",
        |token| {
            client
                .list_organizational_units_for_parent()
                .parent_id(&parent_id)
                .max_results(PAGE_SIZE)
                .set_next_token(token)
                .send()
        },
        |page| {
            for unit in page.organizational_units() {
                let (Some(id), Some(name)) = (unit.id(), unit.name()) else {
                    continue;
                };
                ous.push(DiscoveredOu {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    parent_id: parent_id.clone(),
                    path_names: names.iter().cloned().chain([name.to_owned()]).collect(),
                    path_ids: ids.iter().cloned().chain([id.to_owned()]).collect(),
                });
            }
            progress
                .ous
                .fetch_add(page.organizational_units().len() as u64, Ordering::Relaxed);
            page.next_token().map(str::to_owned)
        },
    )
    .await;
    if let Err(error) = read {
        // The subtree below is unknown: none of it is returned.
        progress.error(format!("{path}: {error}"));
        return (vec![], vec![]);
    }
    let mut accounts = vec![];
    let read = each_page(
        throttle,
        progress,
        "ListAccountsForParent",
        |token| {
            client
                .list_accounts_for_parent()
                .parent_id(&parent_id)
                .max_results(PAGE_SIZE)
                .set_next_token(token)
                .send()
        },
        |page| {
            for account in page.accounts() {
                let Some(id) = account.id() else { continue };
                accounts.push(DiscoveredAccount {
                    id: id.to_owned(),
                    name: account.name().unwrap_or_default().to_owned(),
                    email: account.email().unwrap_or_default().to_owned(),
                    status: account
                        .status()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_else(|| "UNKNOWN".into()),
                    parent_id: parent_id.clone(),
                    path_names: names.clone(),
                    path_ids: ids.clone(),
                });
            }
            progress
                .accounts
                .fetch_add(page.accounts().len() as u64, Ordering::Relaxed);
            page.next_token().map(str::to_owned)
        },
    )
    .await;
    if let Err(error) = read {
        progress.error(format!("{path}: {error}"));
    }
    (ous, accounts)
}
