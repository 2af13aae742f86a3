import type { Claims } from "./auth/tokens.ts";
import type { Channel } from "./channel.ts";
import type { Namespace } from "./namespaces.ts";

/**
 * Who may subscribe and publish, beyond what channel.ts reads in the grant patterns alone: a
 * feature whose channels have state decides for them (private rooms and their members,
 * chat/room-access.ts). Either answer may wait for a store read.
 */
export interface ChannelAccess {
  /** The right to subscribe without a channel token. */
  maySubscribe(claims: Claims, channel: Channel, namespace: Namespace): boolean | Promise<boolean>;
  /**
   * Asked after the `pub_channels` grant passed: may this user publish into the channel?
   * `heldByToken`: the connection holds the channel through a channel token.
   */
  mayPublish(claims: Claims, channel: Channel, heldByToken: boolean): boolean | Promise<boolean>;
}
