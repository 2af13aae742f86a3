import { Type } from "@sinclair/typebox";

/**
 * Identifier schemas shared by the socket frames (ws/frames.ts), the REST routes and the publish
 * service, so neither edge imports the other.
 */

/** A user id as in a token's `sub` and in `user:<id>`. */
export const UserId = Type.String({ minLength: 1, maxLength: 128, pattern: "^[A-Za-z0-9_.@-]+$" });
/** A room id as in `room:<id>`. */
export const RoomId = Type.String({ minLength: 1, maxLength: 128, pattern: "^[A-Za-z0-9_.@-]+$" });
/** A lockable resource, `<module>:<id>` (`customer:77`); its lock events go to `sync:<module>`. */
export const Resource = Type.String({ minLength: 3, maxLength: 200, pattern: "^[a-z]+:[A-Za-z0-9_.@-]{1,128}$" });
/** The event name of a publication. */
export const EventName = Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9_.:-]+$" });
