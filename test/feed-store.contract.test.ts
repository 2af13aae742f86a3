import { feedStoreContract } from "./contract/feed-store.contract.ts";
import { storeSubjects } from "./contract/subjects.ts";

// The FeedStore contract over every implementation (test/contract/subjects.ts).
for (const subject of storeSubjects()) feedStoreContract(subject);
