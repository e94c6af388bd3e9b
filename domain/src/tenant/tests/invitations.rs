//! Invitations, accepting them, and the member limit.

use super::*;

#[test]
fn admins_invite_members_with_a_hashed_expiring_token() {
    fixture()
        .given(team())
        .when(invite(ADMIN, "new@acme.test", Role::Auditor))
        .then_expect_events(vec![invited(INVITE, "new@acme.test", Role::Auditor)]);
}

#[test]
fn analysts_cannot_invite() {
    fixture()
        .given(team())
        .when(invite(ANALYST, "new@acme.test", Role::Analyst))
        .then_expect_error(TenantError::Forbidden(
            "only an owner or admin can invite members".into(),
        ));
}

#[test]
fn nobody_is_invited_as_owner() {
    fixture()
        .given(team())
        .when(invite(OWNER, "new@acme.test", Role::Owner))
        .then_expect_error(TenantError::Rule(
            "nobody is invited as owner: transfer ownership instead".into(),
        ));
}

#[test]
fn members_and_pending_invitees_are_not_invited_again() {
    fixture()
        .given(team())
        .when(invite(OWNER, "analyst@acme.test", Role::Analyst))
        .then_expect_error(TenantError::Conflict("analyst@acme.test is already a member".into()));
    let mut history = team();
    history.push(invited(InvitationId::from_u128(23), "new@acme.test", Role::Analyst));
    fixture()
        .given(history)
        .when(invite(OWNER, "new@acme.test", Role::Analyst))
        .then_expect_error(TenantError::Conflict(
            "new@acme.test already has a pending invitation".into(),
        ));
}

#[test]
fn accepting_a_valid_invitation_creates_the_member_and_a_key() {
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    fixture()
        .given(history)
        .when(accept(&format!("token-{INVITE}")))
        .then_expect_events(vec![
            joined(INVITE, MemberId::from_u128(40), "new@acme.test", Role::Analyst),
            TenantEvent::ApiKeyCreated {
                key_id: ApiKeyId::from_u128(41),
                member_id: MemberId::from_u128(40),
                name: Name::parse("default").unwrap(),
                prefix: "cwk_00000000".into(),
                secret_hash: "hash".into(),
            },
        ]);
}

#[test]
fn a_wrong_token_is_refused() {
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    fixture()
        .given(history)
        .when(accept("token-guess"))
        .then_expect_error(TenantError::NotFoundItem("invitation"));
}

#[test]
fn an_expired_invitation_is_refused() {
    let clock = ManualClock::at(start());
    clock.advance(Duration::days(7));
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    fixture_at(clock)
        .given(history)
        .when(accept(&format!("token-{INVITE}")))
        .then_expect_error(TenantError::InvitationGone("it has expired"));
}

#[test]
fn a_revoked_invitation_is_refused() {
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    history.push(TenantEvent::InvitationRevoked { invitation_id: INVITE });
    fixture()
        .given(history)
        .when(accept(&format!("token-{INVITE}")))
        .then_expect_error(TenantError::InvitationGone("it was revoked"));
}

#[test]
fn an_invitation_is_accepted_once() {
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    history.push(joined(INVITE, MemberId::from_u128(40), "new@acme.test", Role::Analyst));
    fixture()
        .given(history)
        .when(accept(&format!("token-{INVITE}")))
        .then_expect_error(TenantError::InvitationGone("it was already accepted"));
}

#[test]
fn pending_invitations_count_against_the_member_limit() {
    // Owner + analyst + admin are 3 members; one pending invitation makes 4.
    let mut given = team();
    given.push(invited(InvitationId::from_u128(23), "pending@acme.test", Role::Analyst));
    fixture()
        .given(given.clone())
        .when(invite_within(4, 24, "fifth@acme.test"))
        .then_expect_error(TenantError::LimitReached {
            metric: "members",
            used: 4,
            limit: 4,
        });
    fixture()
        .given(given)
        .when(invite_within(5, 24, "fifth@acme.test"))
        .then_expect_events(vec![TenantEvent::MemberInvited {
            invitation_id: InvitationId::from_u128(24),
            email: email("fifth@acme.test"),
            role: Role::Analyst,
            token_hash: "token-24".into(),
            expires_at: start() + Duration::days(7),
        }]);
}

#[test]
fn removed_members_and_expired_invitations_free_their_seats() {
    let mut given = team();
    given.push(TenantEvent::MemberRemoved { member_id: ANALYST });
    given.push(TenantEvent::MemberInvited {
        invitation_id: InvitationId::from_u128(23),
        email: email("old@acme.test"),
        role: Role::Analyst,
        token_hash: "token-23".into(),
        expires_at: start() - Duration::days(1),
    });
    fixture()
        .given(given)
        .when(invite_within(3, 24, "third@acme.test"))
        .then_expect_events(vec![TenantEvent::MemberInvited {
            invitation_id: InvitationId::from_u128(24),
            email: email("third@acme.test"),
            role: Role::Analyst,
            token_hash: "token-24".into(),
            expires_at: start() + Duration::days(7),
        }]);
}

#[test]
fn accepting_is_refused_when_a_downgrade_took_the_invitations_seat() {
    let mut given = team();
    given.push(invited(INVITE, "new@acme.test", Role::Analyst));
    let accept_within = |limit| {
        cmd(TenantCommand::AcceptInvitation {
            invitation_id: INVITE,
            token_hash: format!("token-{INVITE}"),
            member_id: MemberId::from_u128(40),
            api_key: key(ApiKeyId::from_u128(41)),
            member_limit: Limit::AtMost(limit),
        })
    };
    // Its own seat is held by the invitation: four seats are enough.
    fixture()
        .given(given.clone())
        .when(accept_within(4))
        .then_expect_events(vec![
            TenantEvent::InvitationAccepted {
                invitation_id: INVITE,
                member_id: MemberId::from_u128(40),
                email: email("new@acme.test"),
                role: Role::Analyst,
            },
            TenantEvent::ApiKeyCreated {
                key_id: ApiKeyId::from_u128(41),
                member_id: MemberId::from_u128(40),
                name: Name::parse("default").unwrap(),
                prefix: "cwk_00000000".into(),
                secret_hash: "hash".into(),
            },
        ]);
    fixture()
        .given(given)
        .when(accept_within(3))
        .then_expect_error(TenantError::LimitReached {
            metric: "members",
            used: 3,
            limit: 3,
        });
}
