import { chatStoreContract } from "./contract/chat-store.contract.ts";
import { storeSubjects } from "./contract/subjects.ts";

// The ChatStore contract over every implementation (test/contract/subjects.ts).
for (const subject of storeSubjects()) chatStoreContract(subject);
