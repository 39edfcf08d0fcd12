//! GraphQL adapters: authorise, turn input into domain types, call one service, map the result.

pub mod audit;
pub mod buyers;
pub mod caller;
pub mod catalog;
pub mod checkout;
pub mod events;
pub mod identity;
pub mod inline;
pub mod inventory;
pub mod media;
pub mod orders;
pub mod seckill;
pub mod staff;

pub use caller::{Caller, UserError};

#[derive(async_graphql::MergedObject, Default)]
pub struct Query(
    identity::IdentityQuery,
    staff::StaffQuery,
    audit::AuditQuery,
    events::EventsQuery,
    catalog::CatalogQuery,
    inventory::InventoryQuery,
    media::MediaQuery,
    orders::OrdersQuery,
    seckill::SeckillStaffQuery,
    seckill::SeckillBuyerQuery,
    buyers::BuyersQuery,
    checkout::CheckoutQuery,
);

#[derive(async_graphql::MergedObject, Default)]
pub struct Mutation(
    identity::IdentityMutation,
    staff::StaffMutation,
    events::EventsMutation,
    catalog::CatalogMutation,
    inventory::InventoryMutation,
    media::MediaMutation,
    orders::OrdersMutation,
    seckill::SeckillStaffMutation,
    seckill::SeckillBuyerMutation,
    buyers::BuyersMutation,
    checkout::CheckoutMutation,
);

#[derive(async_graphql::MergedSubscription, Default)]
pub struct Subscription(
    audit::AuditSubscription,
    inventory::InventorySubscription,
    orders::OrdersSubscription,
    seckill::SeckillSubscription,
);
