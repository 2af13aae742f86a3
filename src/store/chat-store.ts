/**
 * Durable chat state: rooms, members, messages and read receipts. Every call is scoped by tenant.
 * Implementations: sqlite-chat-store.ts.
 */

export interface StoredMessage {
  id: number;
  room: string;
  sender: string;
  content: string;
  clientMsgId: string | null;
  createdAt: number;
}

export interface NewMessage {
  tenant: string;
  room: string;
  sender: string;
  content: string;
  clientMsgId: string | null;
  createdAt: number;
}

export interface StoredRoom {
  id: string;
  status: "open" | "closed";
  assignedAgent: string | null;
  meta: Record<string, unknown> | null;
  members: string[];
  createdAt: number;
  updatedAt: number;
}

export interface RoomChange {
  status?: "open" | "closed";
  /** null clears the assignment. */
  assignedAgent?: string | null;
  meta?: Record<string, unknown>;
  /** Users added as members (existing members stay). */
  members?: string[];
}

export interface ChatStore {
  /**
   * Stores a batch in one transaction, in array order (ids increase in that order), creating
   * missing rooms as open. A message whose (tenant, room, sender, clientMsgId) is already stored,
   * earlier or in the same batch, is not inserted again: its stored copy comes back, flagged.
   * Resolves only after the transaction committed.
   */
  insertMessages(batch: readonly NewMessage[]): Promise<{ message: StoredMessage; duplicate: boolean }[]>;
  /** Newest first; `before` excludes ids >= before. Stable while new messages arrive (ids only grow). */
  listMessages(tenant: string, room: string, before: number | null, limit: number): Promise<StoredMessage[]>;
  getRoom(tenant: string, room: string): Promise<StoredRoom | null>;
  /** The room's members (empty for a room without members, or one that does not exist). */
  members(tenant: string, room: string): Promise<string[]>;
  /** Creates the room (open) if missing, then applies the change; `created` tells which. */
  upsertRoom(tenant: string, room: string, change: RoomChange, now: number): Promise<{ room: StoredRoom; created: boolean }>;
  /**
   * Moves the user's receipt forward (never back); returns the receipt's message id after the call.
   * Null when `messageId` is no message of this room of this tenant: nothing is stored then.
   */
  markRead(tenant: string, room: string, user: string, messageId: number, now: number): Promise<number | null>;
  /** Messages in the room after the user's receipt, not counting the user's own. */
  unreadCount(tenant: string, room: string, user: string): Promise<number>;
  /**
   * Deletes messages stored before `before` (ms), all tenants, oldest first, in bounded batches
   * that leave the event loop free between them; resolves with how many went. Rooms, members and
   * read receipts stay: a receipt may then point at a pruned id, which still orders (ids are never
   * reused), so unread counts count the kept messages after it. A message stored after a younger
   * one (the clock stepped back) may outlive its age until the messages before it go.
   */
  prune(before: number): Promise<number>;
}
